"""OpenID Connect endpoints: the authorization callback and back-channel logout. Thin."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from broker import audit, idp_cache, sessions
from broker.errors import LoginError
from broker.login import BACKEND_ERRORS, complete_login, login_failed
from broker.models import IdentityProvider


def _oidc_idp(slug: str) -> IdentityProvider:
    idp = idp_cache.get(slug, IdentityProvider.Protocol.OIDC)
    if idp is None:
        raise LoginError("idp_unknown", slug)
    if not idp.enabled:
        raise LoginError("idp_disabled", slug)
    return idp


@never_cache
@require_GET
def callback(request: HttpRequest, slug: str) -> HttpResponse:
    from broker.protocols import oidc

    try:
        idp = _oidc_idp(slug)
        principal, next_url, session_data = oidc.complete(request, idp)
        if session_data.pop("test_mode", False):
            from broker.admin_testlogin import show_result

            return show_result(request, idp, principal)
        return complete_login(request, principal, next_url, session_data=session_data, idp=idp)
    except LoginError as exc:
        return login_failed(request, exc, idp=slug)
    except BACKEND_ERRORS as exc:
        return login_failed(request, LoginError("backend_unavailable", type(exc).__name__), idp=slug)


@csrf_exempt  # server-to-server POST from the provider; the signed logout token is the proof
@never_cache
@require_POST
def backchannel_logout(request: HttpRequest, slug: str) -> HttpResponse:
    from broker.protocols.oidc.logout import verify_logout_token

    try:
        idp = _oidc_idp(slug)
        claims = verify_logout_token(idp, request.POST.get("logout_token", ""))
        ended = sessions.end_sessions(idp=slug, sid=claims.get("sid") or "",
                                      subject=claims.get("sub") or "")
    except LoginError as exc:
        audit.record("oidc.backchannel_logout", outcome="failure", idp=slug, reason=exc.code,
                     detail=exc.detail[:300])
        return JsonResponse({"error": "invalid_request", "error_description": exc.code}, status=400)
    except BACKEND_ERRORS as exc:
        return JsonResponse({"error": "temporarily_unavailable",
                             "error_description": type(exc).__name__}, status=503)
    audit.record("oidc.backchannel_logout", idp=slug, subject=claims.get("sub") or "",
                 sessions_ended=ended, sid_given=bool(claims.get("sid")))
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"
    return response


def end_session_redirect(request: HttpRequest, *, slug: str, id_token: str,
                         next_url: str) -> HttpResponse | None:
    """RP-initiated logout, after the local session has ended: send the browser to the
    provider's end_session_endpoint (with id_token_hint) so it ends its session too. None when
    the provider has none, or anything fails (the user is logged out here either way)."""
    from django.conf import settings
    from django.http import HttpResponseRedirect

    from broker.protocols.oidc.logout import end_session_url

    idp = IdentityProvider.objects.filter(slug=slug, protocol=IdentityProvider.Protocol.OIDC).first()
    if idp is None:
        return None
    try:
        # One fixed post-logout URI (the IdP picker), as providers require it registered exactly.
        url = end_session_url(idp, id_token, f"{settings.BASE_URL}/sso/")
    except LoginError as exc:
        audit.record("oidc.end_session_failed", outcome="failure", idp=slug, reason=exc.code)
        return None
    if url is None:
        return None
    audit.record("oidc.end_session", idp=slug)
    return HttpResponseRedirect(url)
