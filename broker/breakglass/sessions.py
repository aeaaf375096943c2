"""Break-glass sessions: database-backed, with their own cookie, short-lived.

Choice (issue 6): the main SSO session engine stays the cache (Redis) for everyone. A
break-glass login must work with Redis down, so its session lives in the database
(``django.contrib.sessions.backends.db``) under a separate cookie
(``BREAKGLASS_SESSION_COOKIE``, HttpOnly, SameSite=Strict, Secure over HTTPS).
``BreakGlassSessionMiddleware`` sits right after Django's ``SessionMiddleware``:

* request: when the break-glass cookie names a live database session, ``request.session``
  becomes that store (and the main, lazily loaded cache session is never touched, so Redis
  is not needed). An authenticated break-glass session applies to every path except
  ``/sso/`` (SSO flows always use the main session); a half-way login (password checked,
  second factor pending) only to ``/breakglass/``.
* lifetime: ``BREAKGLASS_SESSION_IDLE`` (15 min) and ``BREAKGLASS_SESSION_MAX`` (12 h) from
  the session's own timestamps, and the account must still be enabled; otherwise the
  session is deleted and ``session.expired`` audited. (The break-glass session carries no
  ``broker_auth_at``, so the general SessionLifetimeMiddleware leaves it to this one.)
* response: the break-glass store is saved and its cookie set (or deleted when the session
  was flushed), then ``request.session`` is put back so SessionMiddleware handles the main
  session exactly as before.

``clearsessions`` only knows the main (cache) engine, so every break-glass login removes the
expired rows of ``django_session`` itself (``delete_expired``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
from django.contrib.sessions.models import Session
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers

from broker import audit
from broker.models import BreakGlassAccount

# Session keys. MARKER (the account name) is what the admin banner looks for.
MARKER = "breakglass_account"
AUTH_AT = "breakglass_auth_at"
SEEN_AT = "breakglass_seen_at"
PENDING = "breakglass_pending"

PREFIX = "/breakglass/"
EXCLUDED_PREFIXES = ("/sso/",)
# Refresh "last seen" at most this often (the idle timeout is 15 minutes).
_SEEN_RESOLUTION = 30


def is_active(request: HttpRequest) -> bool:
    """Is ``request.session`` the break-glass store?"""
    return bool(getattr(request, "breakglass_session", False))


def activate(request: HttpRequest, store: DbSessionStore | None = None) -> None:
    """Make ``request.session`` a break-glass database session (a new one by default)."""
    if not is_active(request):
        request._breakglass_main_session = getattr(request, "session", None)  # type: ignore[attr-defined]
        request.session = store if store is not None else DbSessionStore()
        request.breakglass_session = True  # type: ignore[attr-defined]
    elif store is not None:
        request.session = store


def account_name(request: HttpRequest) -> str:
    """The break-glass account of this request's session ("" if none)."""
    if not is_active(request):
        return ""
    return request.session.get(MARKER, "")


def end_sessions(user_id: int) -> int:
    """Delete every live break-glass session of ``user_id`` (disable / rotate)."""
    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        data = session.get_decoded()
        if data.get(MARKER) and str(data.get(SESSION_KEY)) == str(user_id):
            session.delete()
            ended += 1
    return ended


def delete_expired() -> int:
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted


def _expiry_reason(store: DbSessionStore, now: int) -> str:
    if now - int(store.get(AUTH_AT, 0)) > settings.BREAKGLASS_SESSION_MAX:
        return "breakglass_max_age"
    if now - int(store.get(SEEN_AT, 0)) > settings.BREAKGLASS_SESSION_IDLE:
        return "breakglass_idle_timeout"
    user_id = store.get(SESSION_KEY)
    if not BreakGlassAccount.objects.filter(
        user_id=user_id, disabled=False, user__is_active=True
    ).exists():
        return "breakglass_disabled"
    return ""


class BreakGlassSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.breakglass_session = False  # type: ignore[attr-defined]
        cookie = request.COOKIES.get(settings.BREAKGLASS_SESSION_COOKIE)
        stale = False
        if cookie and not request.path.startswith(EXCLUDED_PREFIXES):
            stale = not self._attach(request, cookie)
        signed_in = account_name(request)
        if signed_in and self._password_change(request):
            response = render(request, "breakglass/refused.html", {
                "reason": "Break-glass credentials change only with `manage.py breakglass rotate`.",
            }, status=403)
        else:
            response = self.get_response(request)
        if signed_in and is_active(request) and not request.session.get(MARKER) \
                and not getattr(request, "breakglass_logout_audited", False):
            # Ended elsewhere than /breakglass/logout/ (e.g. the admin's "Log out").
            audit.record("breakglass.logout", actor=signed_in, account=signed_in, via=request.path[:100])
        return self._respond(request, response, had_cookie=bool(cookie), stale=stale)

    @staticmethod
    def _password_change(request: HttpRequest) -> bool:
        try:
            return request.path == reverse("admin:password_change")
        except Exception:  # noqa: BLE001 - admin not installed
            return False

    def _attach(self, request: HttpRequest, cookie: str) -> bool:
        """Use the cookie's session if it is live and fits this path; False if stale."""
        store = DbSessionStore(cookie)
        name = store.get(MARKER)
        if store.session_key is None:  # unknown or expired in the database
            return False
        if name:
            now = int(time.time())
            reason = _expiry_reason(store, now)
            if reason:
                store.delete()
                audit.record("session.expired", actor=name, reason=reason, breakglass=True)
                return False
            if now - int(store.get(SEEN_AT, 0)) >= _SEEN_RESOLUTION:
                store[SEEN_AT] = now
            activate(request, store)
            return True
        if store.get(PENDING):
            if request.path.startswith(PREFIX):
                activate(request, store)
            return True
        return False

    @staticmethod
    def _respond(request: HttpRequest, response: HttpResponse, *, had_cookie: bool,
                 stale: bool) -> HttpResponse:
        name = settings.BREAKGLASS_SESSION_COOKIE
        if is_active(request):
            store = request.session
            request.session = request._breakglass_main_session  # type: ignore[attr-defined]
            request.breakglass_session = False  # type: ignore[attr-defined]
            patch_vary_headers(response, ("Cookie",))
            if store.is_empty():
                if had_cookie:
                    response.delete_cookie(name, path="/", samesite="Strict")
            elif store.modified and response.status_code < 500:
                store.save()
                response.set_cookie(
                    name, store.session_key, max_age=settings.BREAKGLASS_SESSION_MAX, path="/",
                    secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Strict",
                )
        elif stale:
            response.delete_cookie(name, path="/", samesite="Strict")
        return response
