"""Pending logins: one-time, short-lived, bound to the browser that started them.

``begin`` stores what a protocol adapter needs to finish a login (SAML request ID, OIDC
state/nonce/PKCE verifier, the ``next`` URL) in the cache (Redis in production) under a key
the IdP echoes back (InResponseTo, ``state``), and binds it to this browser with a random
token in a dedicated cookie. ``take`` removes it atomically (a replay finds nothing) and
checks the binding. Redis errors propagate: fail closed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from broker.errors import LoginError

_PREFIX = "loginstate"


def _key(kind: str, handle: str) -> str:
    digest = hashlib.sha256(handle.encode()).hexdigest()
    return f"{_PREFIX}:{kind}:{digest}"


def _binding_token(request: HttpRequest) -> str:
    token = request.COOKIES.get(settings.LOGIN_BINDING_COOKIE, "")
    if len(token) == 43 and token.replace("-", "").replace("_", "").isalnum():
        return token
    return ""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def begin(request: HttpRequest, response: HttpResponse, kind: str, handle: str,
          data: dict[str, Any], ttl: int | None = None) -> None:
    """Store ``data`` for ``(kind, handle)`` and bind it to this browser via a cookie."""
    token = _binding_token(request) or secrets.token_urlsafe(32)
    ttl = ttl or settings.LOGIN_STATE_TTL
    record = json.dumps({"bind": _hash(token), "data": data})
    if not cache.add(_key(kind, handle), record, timeout=ttl):
        raise LoginError("state_mismatch", "duplicate pending login handle")
    secure = settings.SECURE_COOKIES
    response.set_cookie(
        settings.LOGIN_BINDING_COOKIE, token, max_age=ttl, path="/", secure=secure,
        httponly=True,
        # Cross-site POSTs from SAML IdPs must carry it; without HTTPS browsers refuse None.
        samesite="None" if secure else "Lax",
    )


def take(request: HttpRequest, kind: str, handle: str) -> dict[str, Any]:
    """Remove and return the pending login ``(kind, handle)`` if this browser started it.

    Raises ``LoginError("state_mismatch")`` when it is unknown, expired, already used or
    was started by another browser.
    """
    if not handle:
        raise LoginError("state_mismatch", "no login handle in the response")
    raw = _pop(_key(kind, handle))
    if raw is None:
        raise LoginError("state_mismatch", "unknown, expired or already used")
    record = json.loads(raw)
    token = _binding_token(request)
    if not token or not hmac.compare_digest(record["bind"], _hash(token)):
        raise LoginError("state_mismatch", "started in another browser")
    return record["data"]


def new_handle() -> str:
    """An opaque, unguessable handle (SAML RelayState, OIDC state): 43 URL-safe chars."""
    return secrets.token_urlsafe(32)


def looks_like_handle(value: str) -> bool:
    return len(value) == 43 and value.replace("-", "").replace("_", "").isalnum()


def _pop(key: str) -> str | None:
    """Atomic get-and-delete: two concurrent callbacks cannot both win."""
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        redis = client.get_client(write=True)
        value = redis.getdel(client.make_key(key))
        if value is None:
            return None
        return client.decode(value)
    # Local-memory cache (embedded default, one process): get then delete.
    value = cache.get(key)
    if value is not None:
        cache.delete(key)
    return value
