"""Provider registration and discovery (``/.well-known/openid-configuration``).

The discovery document's ``issuer`` must equal the configured issuer exactly, or the
provider is refused (OpenID Connect Discovery 1.0, section 4.3). The last good document is
kept in the database; a failed refresh keeps it and is audited.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from broker import audit
from broker.errors import LoginError
from broker.models import IdentityProvider

from . import jwks
from .provider import (
    AUTH_METHODS,
    DEFAULT_ALGORITHMS,
    DEFAULT_SCOPES,
    Provider,
    http_get_json,
    settings_timeout,
)

# Endpoints whose change is worth an audit line.
WATCHED = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
           "end_session_endpoint", "issuer")


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def fetch_discovery(issuer: str, session) -> dict[str, Any]:
    document = http_get_json(session, discovery_url(issuer), timeout=settings_timeout())
    if document.get("issuer") != issuer:
        raise LoginError("oidc_discovery_mismatch",
                         f"discovery issuer {document.get('issuer')!r} != configured {issuer!r}")
    for required in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(document.get(required), str) or not document[required].startswith("http"):
            raise LoginError("idp_unavailable", f"discovery lacks {required}")
    methods = document.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise LoginError("idp_unavailable", "provider does not support PKCE S256")
    return {k: v for k, v in document.items() if isinstance(k, str)}


def register(
    slug: str, *, issuer: str, client_id: str, name: str = "", client_secret_env: str = "",
    client_secret_file: str = "", private_key_file: str = "", scopes: str = DEFAULT_SCOPES,
    auth_method: str = "client_secret_post", algorithms: list[str] | None = None,
    options: dict | None = None, jit_allowed: bool = True, clock_skew_seconds: int | None = None,
    attribute_map: dict | None = None, enabled: bool = True, actor: str | None = None, via: str = "cli",
) -> IdentityProvider:
    """Register an OpenID Provider: discovery is fetched and checked now. Audited."""
    if auth_method not in AUTH_METHODS:
        raise ValidationError(f"auth method must be one of {', '.join(AUTH_METHODS)}")
    if auth_method == "private_key_jwt" and not private_key_file:
        raise ValidationError("private_key_jwt needs --private-key-file")
    if auth_method != "private_key_jwt" and not (client_secret_env or client_secret_file):
        raise ValidationError("give --client-secret-env or --client-secret-file")
    if "openid" not in scopes.split():
        raise ValidationError("scopes must include openid")
    algs = list(algorithms or DEFAULT_ALGORITHMS)
    if "none" in algs:
        raise ValidationError("alg none is never accepted")
    config: dict[str, Any] = {
        "issuer": issuer, "client_id": client_id, "auth_method": auth_method, "scopes": scopes,
        "algorithms": algs, "client_secret_env": client_secret_env,
        "client_secret_file": client_secret_file, "private_key_file": private_key_file,
        **(options or {}),
    }
    idp = IdentityProvider(
        slug=slug, name=name or slug, protocol=IdentityProvider.Protocol.OIDC, enabled=enabled,
        config=config, attribute_map=attribute_map or {}, jit_allowed=jit_allowed,
        clock_skew_seconds=clock_skew_seconds,
    )
    idp.full_clean()
    probe = Provider(idp=idp, issuer=issuer, client_id=client_id, auth_method=auth_method,
                     scopes=scopes, algorithms=tuple(algs), discovery={})
    document = fetch_discovery(issuer, probe.http())
    idp.config = {**config, "discovery": document, "discovery_fetched_at": timezone.now().isoformat()}
    with transaction.atomic():
        idp.save()
        audit.record("idp.created", actor=actor, via=via, idp=slug, after=idp.summary())
        # Inside the transaction: a provider whose keys cannot be fetched is not registered.
        jwks.fetch(Provider.from_idp(idp), reason="registration")
    return idp


def refresh(idp: IdentityProvider, *, actor: str | None = None, via: str = "cli") -> dict:
    """Fetch discovery and JWKS again; keep the last good copies on failure (audited)."""
    provider = Provider.from_idp(idp)
    try:
        document = fetch_discovery(provider.issuer, provider.http())
    except LoginError as exc:
        audit.record("idp.discovery_refresh_failed", outcome="failure", actor=actor, via=via,
                     idp=idp.slug, reason=exc.code, detail=exc.detail[:300])
        return {"error": f"{exc.code}: {exc.detail}"}
    old = idp.config.get("discovery", {})
    changes = {k: {"before": old.get(k), "after": document.get(k)}
               for k in WATCHED if old.get(k) != document.get(k)}
    with transaction.atomic():
        idp.config = {**idp.config, "discovery": document,
                      "discovery_fetched_at": timezone.now().isoformat()}
        idp.save(update_fields=["config", "updated_at"])
        if changes:
            audit.record("idp.discovery_changed", actor=actor, via=via, idp=idp.slug, changes=changes)
    try:
        jwks.fetch(Provider.from_idp(idp), reason="refresh")
    except LoginError as exc:
        return {"changes": changes, "error": f"JWKS: {exc.code}"}
    return {"changes": changes}
