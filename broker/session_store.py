"""The main session engine: Django's cache (Redis) sessions, with one write per login.

Django's cache sessions cost four Redis round trips per login: picking a new key asks
whether a random key EXISTS, ``cycle_key()`` writes the still-empty session under it (SET
NX), and the session middleware checks that it still exists (GET) and writes it again (SET)
at the end of the response. Here ``cycle_key()`` only picks a random key (~165 bits), the
first ``save()`` after it writes with SET NX (a collision, never seen in practice, picks
another key), and a ``save()`` that would store exactly what this request already stored is
skipped. ``complete_login`` saves once, inside the login transaction (a Redis failure undoes
the login); the middleware's save then only sets the cookie. Later requests save as Django
does (a session deleted meanwhile, e.g. by a logout on another node, is not resurrected).
"""

from __future__ import annotations

from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.utils.crypto import get_random_string


class SessionStore(CacheSessionStore):
    _written: tuple | None = None
    _fresh_key = False  # set by cycle_key(): the key is not in the store yet

    def _get_new_session_key(self) -> str:
        return get_random_string(32, VALID_KEY_CHARS)

    def cycle_key(self) -> None:
        """Move the data to a new key (login): the old session is deleted, the new one is
        written by the next ``save()``."""
        data = self._session
        old_key = self.session_key
        self._session_key = self._get_new_session_key()
        self._session_cache = data
        self.modified = True
        self._written = None
        self._fresh_key = True
        if old_key:
            self.delete(old_key)

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        snapshot = (self.session_key, self.get_expiry_age(), self.serializer().dumps(data))
        if not must_create and snapshot == self._written:
            return  # this request already stored exactly this
        if self._fresh_key:
            for _ in range(10):
                try:
                    super().save(must_create=True)
                    break
                except CreateError:
                    self._session_key = self._get_new_session_key()
            else:
                raise CreateError("no free session key after 10 attempts")
            self._fresh_key = False
            snapshot = (self.session_key, *snapshot[1:])
        else:
            super().save(must_create=must_create)
        self._written = snapshot
