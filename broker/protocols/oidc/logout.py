"""OpenID Connect logout: back-channel logout tokens (OIDC Back-Channel Logout 1.0) and the
RP-initiated logout redirect (OIDC RP-Initiated Logout 1.0)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import jwt
from django.core.cache import cache

from broker.errors import LoginError
from broker.models import IdentityProvider

from .backend import ProviderBackend, _jwt_error
from .provider import ASYMMETRIC, SYMMETRIC, Provider

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token is accepted for this long after its iat; its jti is remembered longer.
MAX_TOKEN_AGE = 600


def verify_logout_token(idp: IdentityProvider, token: str) -> dict:
    """Validate a logout token: signature, iss, aud, iat, jti (one use), the back-channel
    logout event, no nonce, and sub and/or sid. Raises ``LoginError``."""
    provider = Provider.from_idp(idp)
    backend = ProviderBackend(provider)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise LoginError("invalid_signature", "malformed logout token") from exc
    alg = header.get("alg")
    if alg not in provider.algorithms or alg not in (*ASYMMETRIC, *SYMMETRIC):
        raise LoginError("oidc_algorithm", f"alg {alg!r}")
    try:
        claims = jwt.decode(
            token, backend.key_for(header, alg), algorithms=[alg], audience=provider.client_id,
            issuer=provider.issuer, leeway=provider.skew,
            options={"require": ["iss", "aud", "iat", "jti", "events"]},
        )
    except jwt.PyJWTError as exc:
        raise _jwt_error(exc) from exc
    events = claims.get("events")
    if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
        raise LoginError("oidc_claims", "not a back-channel logout event")
    if "nonce" in claims:
        raise LoginError("oidc_claims", "a logout token must not carry a nonce")
    if not claims.get("sub") and not claims.get("sid"):
        raise LoginError("oidc_claims", "neither sub nor sid")
    age = time.time() - claims["iat"] if isinstance(claims["iat"], int | float) else None
    if age is None or age > MAX_TOKEN_AGE + provider.skew:
        raise LoginError("oidc_claims", "logout token too old")
    # Remembered past the age limit, so a token is usable once and only once.
    if not cache.add(f"oidc:logout-jti:{idp.slug}:{claims['jti']}", 1,
                     timeout=MAX_TOKEN_AGE + 2 * provider.skew):
        raise LoginError("oidc_claims", "logout token replayed")
    return claims


def end_session_url(idp: IdentityProvider, id_token: str, post_logout_redirect_uri: str) -> str | None:
    """Where to send the browser so the provider ends its session too (None: no endpoint)."""
    provider = Provider.from_idp(idp)
    endpoint = provider.discovery.get("end_session_endpoint")
    if not endpoint:
        return None
    params = {"client_id": provider.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
    if id_token:
        params["id_token_hint"] = id_token
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"
