"""OpenID Connect relying party adapter (Authorization Code + PKCE S256, always).

``begin`` sends the browser to the provider with a one-time state, nonce and PKCE
challenge bound to this browser; ``complete`` checks the callback (state first, then the
RFC 9207 ``iss``), exchanges the code over the back channel and returns a ``Principal``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from secrets import token_urlsafe
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from mozilla_django_oidc.utils import generate_code_challenge

from broker import loginstate
from broker.errors import LoginError
from broker.models import IdentityProvider
from broker.principal import Principal, normalize_attributes

from .backend import ProviderBackend
from .provider import Provider

__all__ = ["begin", "complete", "callback_url"]

# Protocol claims: checked, not attributes of the person.
PROTOCOL_CLAIMS = {"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp",
                   "auth_time", "acr", "amr", "sid", "jti", "s_hash", "typ"}


def callback_url(idp: IdentityProvider) -> str:
    return f"{settings.BASE_URL}/sso/{idp.slug}/oidc/callback/"


def begin(request: HttpRequest, idp: IdentityProvider, next_url: str, mode: str = "login") -> HttpResponse:
    provider = Provider.from_idp(idp)
    state = loginstate.new_handle()
    nonce = token_urlsafe(32)
    verifier = token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": callback_url(idp),
        "scope": provider.scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": generate_code_challenge(verifier, "S256"),
        "code_challenge_method": "S256",
    }
    endpoint = provider.endpoint("authorization_endpoint")
    response = HttpResponseRedirect(f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}")
    response["Cache-Control"] = "no-store"
    loginstate.begin(request, response, "oidc", state,
                     {"idp": idp.slug, "nonce": nonce, "verifier": verifier, "next": next_url, "mode": mode})
    return response


def complete(request: HttpRequest, idp: IdentityProvider) -> tuple[Principal, str, dict]:
    """Check the callback and return (principal, next URL, session data)."""
    pending = loginstate.take(request, "oidc", request.GET.get("state", ""))  # state first
    if pending.get("idp") != idp.slug:
        raise LoginError("oidc_mixup", "state was issued for another provider")
    provider = Provider.from_idp(idp)
    iss = request.GET.get("iss")
    if iss is not None and iss != provider.issuer:
        raise LoginError("oidc_mixup", "callback iss is another provider")
    if iss is None and provider.discovery.get("authorization_response_iss_parameter_supported"):
        raise LoginError("oidc_mixup", "provider sends iss but the callback has none")
    if request.GET.get("error"):
        raise LoginError("oidc_error", str(request.GET["error"])[:100])
    code = request.GET.get("code")
    if not code:
        raise LoginError("oidc_error", "no authorization code")
    if not pending.get("verifier"):
        raise LoginError("oidc_pkce", "no PKCE verifier stored for this state")

    backend = ProviderBackend(provider)
    tokens = backend.get_token({
        "grant_type": "authorization_code", "code": code, "redirect_uri": callback_url(idp),
        "code_verifier": pending["verifier"],
    })
    id_token = tokens["id_token"]
    claims = backend.verify_token(id_token, nonce=pending["nonce"])
    userinfo = backend.get_userinfo(tokens.get("access_token", ""), id_token, claims)
    merged = {**userinfo, **claims}  # signed ID token claims win over userinfo
    attributes = normalize_attributes(
        {k: v for k, v in merged.items() if k not in PROTOCOL_CLAIMS and k != "sub"}, idp.attribute_map)
    auth_time = claims.get("auth_time")
    try:
        principal = Principal(
            idp=idp.slug, protocol="oidc", subject=claims["sub"], issuer=provider.issuer,
            attributes=attributes,
            authn_instant=datetime.fromtimestamp(auth_time, UTC) if isinstance(auth_time, int) else None,
            authn_context=claims.get("acr"), session_index=claims.get("sid"),
        )
    except ValueError as exc:
        raise LoginError("invalid_principal", str(exc)) from exc
    session_data = {"oidc_id_token": id_token}
    if pending.get("mode") == "test":
        session_data["test_mode"] = True  # an admin's test login: show, change nothing
    return principal, pending["next"], session_data
