"""Thin HTTP layer: parse the request, call a service, render. No business logic here."""

from __future__ import annotations

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from broker import audit, idp_cache, oidc_views, saml_views
from broker.errors import LoginError
from broker.login import (
    BACKEND_ERRORS,
    SESSION_IDP,
    SESSION_INDEX,
    SESSION_PROTOCOL,
    SESSION_ROLES,
    SESSION_SUBJECT,
    login_failed,
)
from broker.models import FederatedIdentity, IdentityProvider
from broker.protocols import adapter_for
from broker.redirects import safe_next


@never_cache
@require_GET
def picker(request: HttpRequest) -> HttpResponse:
    """The IdP picker: every enabled IdP, each login link carrying a safe ``next``."""
    next_url = safe_next(request.GET.get("next"))
    idps = IdentityProvider.objects.filter(enabled=True).only("slug", "name", "protocol")
    return render(request, "broker/picker.html", {"idps": idps, "next": next_url})


@never_cache
@require_GET
def begin_login(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a login at IdP ``slug``: the protocol adapter stores state and redirects."""
    next_url = safe_next(request.GET.get("next"))
    try:
        idp = idp_cache.get(slug)
        if idp is None:
            raise LoginError("idp_unknown", slug)
        if not idp.enabled:
            raise LoginError("idp_disabled", slug)
        return adapter_for(idp.protocol).begin(request, idp, next_url)
    except LoginError as exc:
        return login_failed(request, exc, idp=slug)
    except BACKEND_ERRORS as exc:
        return login_failed(request, LoginError("backend_unavailable", type(exc).__name__), idp=slug)


@never_cache
@require_GET
def me(request: HttpRequest) -> JsonResponse:
    """Who am I? 401 when not logged in; else user, IdP, subject and roles of this session."""
    if not request.user.is_authenticated:
        return JsonResponse(
            {"error": "not_authenticated", "login_url": "/sso/"}, status=401
        )
    session = request.session
    idp, subject = session.get(SESSION_IDP), session.get(SESSION_SUBJECT)
    link = FederatedIdentity.objects.filter(idp__slug=idp, subject=subject).only(
        "last_attributes").first() if idp else None
    return JsonResponse({
        "user": request.user.get_username(),
        "email": request.user.email,
        "idp": idp,
        "subject": subject,
        "roles": session.get(SESSION_ROLES, []),
        # The normalized attributes of this login (as the IdP sent them, after mapping).
        "attributes": link.last_attributes if link else {},
    })


@never_cache
@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET shows a confirmation (logout by GET would be a CSRF target); POST ends the session.

    After a SAML login the browser then goes on to the IdP's single logout endpoint (if it
    has one) and comes back to ``next`` through /sso/<slug>/saml/slo/.
    """
    next_url = safe_next(request.POST.get("next") or request.GET.get("next"), default="/sso/")
    if request.method == "GET":
        return render(request, "broker/logout.html", {"next": next_url})
    if request.user.is_authenticated:
        session = request.session
        username = request.user.get_username()
        idp = session.get(SESSION_IDP, "")
        subject = session.get(SESSION_SUBJECT, "")
        protocol = session.get(SESSION_PROTOCOL, "")
        name_id = session.get(saml_views.SESSION_NAME_ID)
        session_index = session.get(SESSION_INDEX, "")
        id_token = session.get("broker_oidc_id_token", "")
        # The local session always ends first, whatever happens afterwards.
        logout(request)
        audit.record("logout", actor=username, idp=idp, subject=subject)
        if protocol == "saml" and idp:
            slo = saml_views.start_single_logout(request, slug=idp, subject=subject, name_id=name_id,
                                                 session_index=session_index, next_url=next_url)
            if slo is not None:
                return slo
        if protocol == "oidc" and idp:
            end_session = oidc_views.end_session_redirect(request, slug=idp, id_token=id_token,
                                                          next_url=next_url)
            if end_session is not None:
                return end_session
    return redirect(next_url)


@never_cache
def forward_auth_view(request: HttpRequest) -> HttpResponse:
    """``/auth/verify`` through Django (the test client, ``runserver``); gunicorn serves the
    same decision from ``portal_sso.wsgi`` without middleware."""
    from broker import forward_auth

    decision = forward_auth.decide(request.META)
    response = HttpResponse(status=decision.status)
    for name, value in decision.headers:
        response[name] = value
    return response


def _error_page(request: HttpRequest, status: int, code: str, title: str, hint: str) -> HttpResponse:
    return render(
        request, "broker/error.html",
        {"code": code, "title": title, "hint": hint,
         "request_id": getattr(request, "request_id", "")},
        status=status,
    )


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error_page(request, 400, "bad_request", "Bad request",
                       "The request was malformed or its host is not allowed.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error_page(request, 403, "forbidden", "Forbidden",
                       "You are not allowed to do this (CSRF check failed or missing role).")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error_page(request, 404, "not_found", "Not found", "Check the address.")


def server_error(request: HttpRequest) -> HttpResponse:
    return _error_page(request, 500, "internal_error", "Something went wrong on our side",
                       "The error was logged with this request ID; quote it when you report it.")

