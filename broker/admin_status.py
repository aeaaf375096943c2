"""What the IdP list in the admin shows about each provider's health, computed from the
database row and the caches only (no network, no XML parsing per page view)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from broker.models import IdentityProvider

CERT_WARNING_DAYS = 30


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


@dataclass
class IdpStatus:
    trust_age: timedelta | None = None  # metadata (SAML) or discovery (OIDC) age
    keys_age: timedelta | None = None  # JWKS age (OIDC)
    cert_expiry: datetime | None = None
    warnings: list[str] = field(default_factory=list)


def status(idp: IdentityProvider) -> IdpStatus:
    now = timezone.now()
    result = IdpStatus()
    cfg = idp.config
    if idp.legacy_crypto:
        result.warnings.append("legacy crypto (SHA-1/RSA-1_5/3DES accepted)")
    if not idp.enabled:
        result.warnings.append("disabled")
    if idp.protocol == IdentityProvider.Protocol.SAML:
        fetched = _parse(cfg.get("metadata_fetched_at"))
        result.trust_age = now - fetched if fetched else None
        result.cert_expiry = _parse(cfg.get("signing_cert_not_after"))
        valid_until = _parse(cfg.get("metadata_valid_until"))
        if valid_until and valid_until <= now:
            result.warnings.append("metadata expired: logins refused")
        if cfg.get("allow_unsolicited"):
            result.warnings.append("IdP-initiated logins allowed")
    else:
        from broker.protocols.oidc import jwks

        fetched = _parse(cfg.get("discovery_fetched_at"))
        result.trust_age = now - fetched if fetched else None
        keyset = jwks.cached(idp.slug)
        if keyset is not None:
            result.keys_age = timedelta(seconds=max(0, now.timestamp() - keyset.fetched_at))
        else:
            result.warnings.append("no JWKS cached")
    if result.cert_expiry is not None:
        if result.cert_expiry <= now:
            result.warnings.append("signing certificate expired")
        elif result.cert_expiry - now < timedelta(days=CERT_WARNING_DAYS):
            result.warnings.append("signing certificate expires within 30 days")
    return result


def humanize(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
