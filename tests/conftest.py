"""Shared fixtures. Tests run against the real PostgreSQL and Redis (see Makefile)."""

from __future__ import annotations

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.cache import cache
from django.test import RequestFactory

from broker.models import IdentityProvider
from broker.principal import Principal, normalize_attributes
from broker.services import roles as role_service


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with none of the broker's keys (only our prefix: other checkouts may
    share the Redis database)."""
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()
    from broker import rbac

    rbac._rules_cache.clear()  # per-process caches follow Redis (just emptied)
    rbac._version_checked[:] = [0.0, 0]
    yield


@pytest.fixture
def make_idp(db):
    def _make(slug: str = "corp", protocol: str = "saml", **fields) -> IdentityProvider:
        fields.setdefault("name", slug.title())
        return IdentityProvider.objects.create(slug=slug, protocol=protocol, **fields)

    return _make


@pytest.fixture
def make_role(db):
    def _make(name: str, **kwargs):
        return role_service.add_role(name, actor="test", **kwargs)

    return _make


@pytest.fixture
def make_principal():
    def _make(subject: str = "alice", idp: str = "corp", protocol: str = "saml", attributes=None,
              attribute_map=None, **kwargs) -> Principal:
        attrs = normalize_attributes(attributes or {}, attribute_map)
        return Principal(idp=idp, protocol=protocol, subject=subject,
                         issuer=f"https://{idp}.example/idp", attributes=attrs, **kwargs)

    return _make


@pytest.fixture
def session_request():
    """A request with a real (Redis-backed) session, as the middleware would build it."""

    def _make(path: str = "/sso/x/acs/", method: str = "get", **extra):
        request = getattr(RequestFactory(), method)(path, **extra)
        SessionMiddleware(lambda r: None).process_request(request)
        request.session.save()
        from django.contrib.auth.models import AnonymousUser

        request.user = AnonymousUser()
        return request

    return _make


class RedisProcess:
    """A throwaway real redis-server on a free loopback port, that a test may stop."""

    def __init__(self) -> None:
        import shutil
        import socket
        import subprocess
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/ensure-services.sh)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cache_settings(self) -> dict:
        return {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": self.url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
            }
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_process():
    server = RedisProcess()
    yield server
    server.stop()
