"""Request ID, client address, and session lifetime enforcement."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Callable
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from broker import audit, context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Session keys written at login (broker.login) and read by the lifetime check.
SESSION_AUTH_AT = "broker_auth_at"
SESSION_SEEN_AT = "broker_seen_at"
# Refresh "last seen" at most this often, so most requests do not write the session.
_SEEN_RESOLUTION = 60


@lru_cache(maxsize=1)
def _trusted_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES)


def _is_trusted(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in _trusted_networks())


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or the right-most X-Forwarded-For hop that is not
    one of our trusted proxies (never the left-most, which the client controls)."""
    remote = request.META.get("REMOTE_ADDR") or None
    if remote and _is_trusted(remote):
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not _is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return remote
    return remote


class RequestIdMiddleware:
    """Give every request an ID (the proxy's X-Request-ID if well-formed) and an action
    context, so audit events and log lines carry request ID, client IP and actor."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        with context.acting(actor="", source_ip=client_ip(request), request_id=request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.current().request_id or "-"
        return True


class SessionLifetimeMiddleware:
    """End sessions past the absolute maximum or idle for too long.

    Also names the authenticated user as the actor of the request's audit events.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = int(time.time())
            session = request.session
            auth_at = session.get(SESSION_AUTH_AT, now)
            seen_at = session.get(SESSION_SEEN_AT, now)
            expired = ""
            if now - auth_at > settings.SESSION_MAX_AGE:
                expired = "session_max_age"
            elif now - seen_at > settings.SESSION_IDLE_TIMEOUT:
                expired = "session_idle_timeout"
            if expired:
                username = user.get_username()
                logout(request)
                audit.record("session.expired", actor=username, reason=expired)
            else:
                if now - seen_at >= _SEEN_RESOLUTION:
                    session[SESSION_SEEN_AT] = now
                context.set_actor(user.get_username())
        return self.get_response(request)
