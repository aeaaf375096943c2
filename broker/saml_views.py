"""SAML endpoints: SP metadata, assertion consumer, single logout. Thin: the work is in
``broker.protocols.saml``; failures become audited, named error pages."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from broker import audit, idp_cache, sessions
from broker.errors import LoginError
from broker.keys import KeysMissing
from broker.login import (
    BACKEND_ERRORS,
    SESSION_IDP,
    SESSION_INDEX,
    SESSION_SUBJECT,
    complete_login,
    login_failed,
    render_error,
)
from broker.models import IdentityProvider

logger = logging.getLogger("broker.saml")

# Written by complete_login from acs.complete's session_data ({"saml_name_id": ...}).
SESSION_NAME_ID = "broker_saml_name_id"


def _saml_idp(slug: str, *, must_be_enabled: bool = True) -> IdentityProvider:
    idp = idp_cache.get(slug, IdentityProvider.Protocol.SAML)
    if idp is None:
        raise LoginError("idp_unknown", slug)
    if must_be_enabled and not idp.enabled:
        raise LoginError("idp_disabled", slug)
    if not idp.config.get("metadata_xml"):
        raise LoginError("idp_unavailable", "no metadata registered")
    return idp


def _too_large(request: HttpRequest) -> bool:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return True
    return length > settings.SAML_MAX_POST_BYTES


@never_cache
@require_GET
def metadata(request: HttpRequest, slug: str) -> HttpResponse:
    from broker.protocols.saml.spmetadata import sp_metadata

    try:
        idp = _saml_idp(slug, must_be_enabled=False)
        xml = sp_metadata(idp)
    except LoginError as exc:
        return render_error(request, exc)
    except KeysMissing:
        return render_error(request, LoginError("idp_unavailable", "SP keys missing"))
    except BACKEND_ERRORS as exc:
        return render_error(request, LoginError("backend_unavailable", type(exc).__name__))
    response = HttpResponse(xml, content_type="application/samlmetadata+xml")
    response["Content-Disposition"] = f'inline; filename="sp-metadata-{slug}.xml"'
    return response


@csrf_exempt  # a cross-site POST from the IdP: the signed Response and the pending-login binding protect it
@never_cache
@require_POST
def acs(request: HttpRequest, slug: str) -> HttpResponse:
    from broker.protocols import saml

    if _too_large(request):
        # Refused before the body is read or parsed.
        response = login_failed(request, LoginError("saml_too_large"), idp=slug)
        response["Connection"] = "close"
        return response
    try:
        idp = _saml_idp(slug)
        principal, next_url, session_data = saml.complete(request, idp)
        if session_data.pop("test_mode", False):
            from broker.admin_testlogin import show_result

            return show_result(request, idp, principal)
        return complete_login(request, principal, next_url, session_data=session_data, idp=idp)
    except LoginError as exc:
        return login_failed(request, exc, idp=slug)
    except BACKEND_ERRORS as exc:
        return login_failed(request, LoginError("backend_unavailable", type(exc).__name__), idp=slug)


# -- single logout ---------------------------------------------------------------------------


def _audit_quietly(action: str, **fields: Any) -> None:
    """Audit a logout event; a failing audit store must not undo a logout that already happened."""
    try:
        audit.record(action, **fields)
    except BACKEND_ERRORS as exc:
        logger.error("could not audit %s (%s): %s", action, fields.get("reason", ""), type(exc).__name__)


def start_single_logout(request: HttpRequest, *, slug: str, subject: str, name_id: dict | None,
                        session_index: str, next_url: str) -> HttpResponse | None:
    """SP-initiated SLO, called by logout_view *after* the local session has ended.

    Returns the redirect/auto-POST to the IdP, or None (no SLO at this IdP, or building the
    request failed: then the user simply lands on ``next``, logged out here, and the failure
    is logged and audited as ``saml.slo_failed``).
    """
    from broker.protocols import saml

    try:
        idp = IdentityProvider.objects.filter(slug=slug, protocol=IdentityProvider.Protocol.SAML).first()
        if idp is None or not idp.enabled or not idp.config.get("metadata_xml"):
            return None
        return saml.begin_logout(request, idp, name_id=name_id, session_index=session_index,
                                 next_url=next_url)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the user is already logged out here
        code = exc.code if isinstance(exc, LoginError) else "saml_slo_request_failed"
        logger.warning("SAML SLO request to idp=%s not sent: %s (%s)", slug, code, type(exc).__name__)
        _audit_quietly("saml.slo_failed", outcome="failure", idp=slug, subject=subject, reason=code,
                       direction="sp-initiated", detail=f"{type(exc).__name__}: {exc}"[:300])
        return None


def _session_matches(request: HttpRequest, slug: str, incoming: Any) -> bool:
    """Is this browser's own session the one the IdP logs out (same IdP, NameID/subject, and
    SessionIndex when the request names any)?"""
    if not request.user.is_authenticated or request.session.get(SESSION_IDP) != slug:
        return False
    stored = request.session.get(SESSION_NAME_ID) or {}
    if incoming.subject not in {(stored.get("text") or "").strip(), request.session.get(SESSION_SUBJECT)}:
        return False
    return not incoming.session_indexes or request.session.get(SESSION_INDEX) in incoming.session_indexes


def _end_sessions(request: HttpRequest, idp: IdentityProvider, incoming: Any) -> tuple[int, bool]:
    """End the sessions the LogoutRequest names; returns (count, mapped).

    With SessionIndex: only those IdP sessions (saml-core 3.7.3.2). Without: every session of
    the subject, which the registry knows by Principal.subject (= the NameID unless the IdP
    takes the subject from an attribute: then only this browser's session can be matched, and
    ``mapped`` is False so the IdP hears that the logout was not complete).
    """
    mapped = True
    if incoming.session_indexes:
        ended = sum(sessions.end_sessions(idp=idp.slug, sid=si) for si in incoming.session_indexes)
    elif idp.subject_source:
        ended, mapped = 0, False
    else:
        ended = sessions.end_sessions(idp=idp.slug, subject=incoming.subject)
    if request.user.is_authenticated:
        key = request.session.session_key
        if _session_matches(request, idp.slug, incoming):
            if key and request.session.exists(key):
                ended += 1  # not in the registry (e.g. it predates it)
            logout(request)
        elif key and not request.session.exists(key):
            # Ended through the registry just now: flush the in-memory copy too, or saving it
            # at the end of this response would bring the session back.
            logout(request)
    return ended, mapped


def _idp_initiated(request: HttpRequest, idp: IdentityProvider) -> HttpResponse:
    from broker.protocols import saml

    incoming = saml.receive_logout_request(request, idp)
    fields = {"idp": idp.slug, "subject": incoming.subject, "direction": "idp-initiated",
              "binding": incoming.binding.rsplit(":", 1)[-1],
              "session_indexes": len(incoming.session_indexes)}
    try:
        ended, mapped = _end_sessions(request, idp, incoming)
    except BACKEND_ERRORS as exc:
        _audit_quietly("saml.slo_failed", outcome="failure", reason="backend_unavailable", **fields)
        return _answer(request, idp, incoming, ok=False, detail="session store unavailable",
                       fallback=LoginError("backend_unavailable", type(exc).__name__))
    if mapped:
        _audit_quietly("saml.slo", count=ended, **fields)
    else:
        _audit_quietly("saml.slo_failed", outcome="failure", reason="saml_slo_unmapped", count=ended,
                       detail="no SessionIndex and the subject comes from an attribute", **fields)
    return _answer(request, idp, incoming, ok=mapped, detail="" if mapped else "principal not mapped")


def _answer(request: HttpRequest, idp: IdentityProvider, incoming: Any, *, ok: bool, detail: str = "",
            fallback: LoginError | None = None) -> HttpResponse:
    """Our LogoutResponse to the IdP; without one (no SLO endpoint, or building it failed: the
    sessions are ended either way) the browser goes to the IdP picker or sees ``fallback``."""
    from broker.protocols import saml

    try:
        reply = saml.logout_reply(idp, incoming, ok=ok, detail=detail)
    except Exception as exc:  # noqa: BLE001 - never a 500 once the logout itself is done
        logger.exception("could not build the LogoutResponse for idp=%s", idp.slug)
        _audit_quietly("saml.slo_failed", outcome="failure", idp=idp.slug, subject=incoming.subject,
                       reason="saml_slo_reply_failed", detail=f"{type(exc).__name__}: {exc}"[:300])
        reply = None
    if reply is not None:
        return reply
    return render_error(request, fallback) if fallback else HttpResponseRedirect(settings.LOGIN_URL)


def _logout_answer(request: HttpRequest, idp: IdentityProvider) -> HttpResponse:
    from broker.protocols import saml

    result = saml.complete_logout(request, idp)
    if result.success:
        _audit_quietly("saml.slo_completed", idp=idp.slug, direction="sp-initiated")
    else:
        _audit_quietly("saml.slo_partial", outcome="failure", idp=idp.slug, reason="saml_status",
                       direction="sp-initiated", status=result.status[:300])
    return HttpResponseRedirect(result.next_url)


@csrf_exempt  # the POST binding is a cross-site POST from the IdP: signatures protect it
@never_cache
@require_http_methods(["GET", "POST"])
def slo(request: HttpRequest, slug: str) -> HttpResponse:
    """Single logout endpoint: IdP-initiated LogoutRequests and answers to our own requests.

    Never a 500: every refusal is audited as ``saml.slo_failed`` with its code, and answered
    with a failure LogoutResponse to the IdP where possible, else the browser goes on to its
    ``next`` (our own logout) or sees the error page.
    """
    from broker.protocols.saml.slo import SloError

    if request.method == "POST" and _too_large(request):
        _audit_quietly("saml.slo_failed", outcome="failure", idp=slug, reason="saml_too_large")
        response = render_error(request, LoginError("saml_too_large"))
        response["Connection"] = "close"
        return response
    try:
        idp = _saml_idp(slug, must_be_enabled=False)  # logging out of a disabled IdP still works
        from broker.protocols import saml

        kind = saml.logout_message_kind(request)
        if kind == "request":
            return _idp_initiated(request, idp)
        if kind == "response":
            return _logout_answer(request, idp)
        raise LoginError("saml_malformed", "neither SAMLRequest nor SAMLResponse")
    except LoginError as exc:
        _audit_quietly("saml.slo_failed", outcome="failure", idp=slug, reason=exc.code,
                       detail=exc.detail[:300])
        logger.warning("SAML SLO refused idp=%s code=%s", slug, exc.code)
        if isinstance(exc, SloError) and exc.reply is not None:
            return exc.reply
        if isinstance(exc, SloError) and exc.next_url:
            return HttpResponseRedirect(exc.next_url)
        return render_error(request, exc)
    except (BACKEND_ERRORS + (KeysMissing,)) as exc:
        _audit_quietly("saml.slo_failed", outcome="failure", idp=slug, reason="backend_unavailable")
        return render_error(request, LoginError("backend_unavailable", type(exc).__name__))
