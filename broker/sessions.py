"""Which sessions belong to whom: so an IdP (SAML SLO, OIDC back-channel logout) or an
admin change (roles revoked) can end them on every node.

Sessions live in the cache (Redis); this registry keeps, per (IdP, subject), per (IdP,
session ID at the IdP) and per local user, the set of our session keys, with the maximum
session lifetime as TTL. Ending a session deletes it from the session store, so the next
request on any node is anonymous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import import_module

from django.conf import settings
from django.core.cache import cache

_PREFIX = "sessreg"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _keys(idp: str = "", subject: str = "", sid: str = "", user_id: int | None = None) -> list[str]:
    keys = []
    if idp and subject:
        keys.append(f"{_PREFIX}:sub:{idp}:{_digest(subject)}")
    if idp and sid:
        keys.append(f"{_PREFIX}:sid:{idp}:{_digest(sid)}")
    if user_id is not None:
        keys.append(f"{_PREFIX}:user:{user_id}")
    return keys


def _redis():
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        return client, client.get_client(write=True)
    return None, None


def _add(keys: list[str], member: str) -> None:
    """Add ``member`` to each set, refreshing its TTL: one round trip for all of them."""
    client, redis = _redis()
    ttl = settings.SESSION_MAX_AGE
    if redis is not None:
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            full = client.make_key(key)
            pipe.sadd(full, member)
            pipe.expire(full, ttl)
        pipe.execute()
        return
    for key in keys:
        members = set(cache.get(key) or ())
        members.add(member)
        cache.set(key, members, timeout=ttl)


def _pop_all(key: str) -> set[str]:
    client, redis = _redis()
    if redis is not None:
        full = client.make_key(key)
        pipe = redis.pipeline()
        pipe.smembers(full)
        pipe.delete(full)
        members, _ = pipe.execute()
        return {m.decode() if isinstance(m, bytes) else m for m in members}
    members = set(cache.get(key) or ())
    cache.delete(key)
    return members


def register(session_key: str, *, idp: str, subject: str, sid: str = "", user_id: int | None = None) -> None:
    """Remember that ``session_key`` belongs to this login."""
    _add(_keys(idp, subject, sid, user_id), session_key)


def _delete_sessions(session_keys: Iterable[str]) -> int:
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    ended = 0
    for session_key in set(session_keys):
        store = store_class(session_key)
        if store.exists(session_key):
            store.delete(session_key)
            ended += 1
    return ended


def end_sessions(*, idp: str = "", subject: str = "", sid: str = "", user_id: int | None = None) -> int:
    """End every session registered under the given keys; returns how many ended.

    For an IdP logout pass ``idp`` with ``sid`` (only that IdP session) or ``subject`` (all of
    the subject's sessions from that IdP). For admin changes pass ``user_id``.
    """
    found: set[str] = set()
    for key in _keys(idp, subject if not sid else "", sid, user_id):
        found |= _pop_all(key)
    return _delete_sessions(found)
