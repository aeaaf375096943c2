"""Forward-auth for nginx ``auth_request`` (and Traefik/Caddy forward auth): is this request
allowed, and as whom?

Answers from the broker's session (cookie) or a Bearer JWT (``broker.tokens``): 200 with
``X-Auth-User``, ``X-Auth-Email``, ``X-Auth-Roles``, ``X-Auth-IdP``; 401 when not
authenticated (``X-Auth-Login-URL`` tells a proxy where to send a browser); 403 when a
role was required (``?role=NAME`` or ``X-Auth-Require-Role``) and is not held.

It is the hottest path of the deployment, so it runs outside Django's middleware (see
``portal_sso/wsgi.py``), reads only Redis (the session) or nothing at all (a token seen
before), and never the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import import_module
from urllib.parse import parse_qs, quote

from django.conf import settings
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.core.cache import caches

from broker.login import SESSION_EMAIL, SESSION_IDP, SESSION_ROLES, SESSION_USERNAME
from broker.middleware import SESSION_AUTH_AT, SESSION_SEEN_AT
from broker.tokens import TokenError, validate_bearer

PATH = "/auth/verify"
ROLE_HEADER = "HTTP_X_AUTH_REQUIRE_ROLE"
_SEEN_RESOLUTION = 60


@dataclass
class Decision:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return {200: "OK", 401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}[self.status]


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return ""


def _from_session(session_key: str) -> dict | None:
    if not session_key or len(session_key) > 64 or not session_key.isalnum():
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    if isinstance(store, CacheSessionStore):
        # Read the cache directly: SessionStore.load() turns a Redis outage into "no session";
        # here an outage must be a 503, not a login loop.
        data = caches[settings.SESSION_CACHE_ALIAS].get(store.cache_key) or {}
    else:
        data = store.load()
    if "_auth_user_id" not in data or SESSION_USERNAME not in data:
        return None
    now = int(time.time())
    auth_at, seen_at = data.get(SESSION_AUTH_AT, 0), data.get(SESSION_SEEN_AT, 0)
    if now - auth_at > settings.SESSION_MAX_AGE or now - seen_at > settings.SESSION_IDLE_TIMEOUT:
        return None
    if now - seen_at >= _SEEN_RESOLUTION:
        store[SESSION_SEEN_AT] = now  # activity behind the proxy keeps the session alive
        store.save()
    return data


def _login_url(environ: dict) -> str:
    original = environ.get("HTTP_X_ORIGINAL_URI") or environ.get("HTTP_X_FORWARDED_URI") or "/"
    if not original.startswith("/") or original.startswith("//"):
        original = "/"
    return f"{settings.BASE_URL}/sso/?next={quote(original, safe='/')}"


def decide(environ: dict) -> Decision:
    """The forward-auth answer for a WSGI environ (shared by the fast path and the view)."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if authorization[:7].lower() == "bearer ":
        try:
            token = validate_bearer(authorization[7:].strip())
        except TokenError as exc:
            status = 503 if exc.code == "temporarily_unavailable" else 401
            return Decision(status, [("WWW-Authenticate", f'Bearer error="{exc.code}"')])
        user, email, roles, idp = token.username, token.email, token.roles, token.idp
    else:
        session = _from_session(_cookie(environ.get("HTTP_COOKIE", ""), settings.SESSION_COOKIE_NAME))
        if session is None:
            return Decision(401, [("X-Auth-Login-URL", _login_url(environ)),
                                  ("WWW-Authenticate", 'Bearer realm="portal"')])
        user, email = session[SESSION_USERNAME], session.get(SESSION_EMAIL, "")
        roles, idp = tuple(session.get(SESSION_ROLES, ())), session.get(SESSION_IDP, "")
    # Every role named anywhere is required: a header cannot replace the query's role (a
    # proxy that forwards client headers would otherwise let users pick their own check).
    required = {r for r in [environ.get(ROLE_HEADER, ""),
                            *parse_qs(environ.get("QUERY_STRING", "")).get("role", [])] if r}
    if not required <= set(roles):
        return Decision(403, [("X-Auth-User", user)])
    return Decision(200, [("X-Auth-User", user), ("X-Auth-Email", email),
                          ("X-Auth-Roles", ",".join(roles)), ("X-Auth-IdP", idp)])


def wsgi_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """The bare WSGI handler: no middleware, no URL resolution, an empty body."""
    try:
        decision = decide(environ)
    except Exception:  # Redis down or similar: fail closed, visibly
        decision = Decision(503)
    headers = [*decision.headers, ("Content-Length", "0"), ("Cache-Control", "no-store")]
    start_response(f"{decision.status} {decision.reason}", headers)
    return [b""]
