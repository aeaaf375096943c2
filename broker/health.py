"""Liveness (/healthz) and readiness (/readyz) probes. No session, no auth, no audit."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger("broker.health")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving; says nothing about its dependencies."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_cache(alias: str) -> str:
    cache = caches[alias]
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    if cache.get(key) != "1":
        raise RuntimeError("value written was not read back")
    cache.delete(key)
    return "ok"


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer; 503 naming the dependency that does not."""
    checks: dict[str, str] = {}
    failed: list[str] = []
    probes = {"database": _check_database}
    name = "redis" if settings.REDIS_URL else "cache"
    probes[name] = lambda: _check_cache("default")
    for dep, probe in probes.items():
        try:
            checks[dep] = probe()
        except Exception as exc:  # any failure of a dependency means "not ready"
            checks[dep] = f"unavailable ({type(exc).__name__})"
            failed.append(dep)
            logger.warning("readyz: %s unavailable: %s", dep, type(exc).__name__)
            if dep == "database":
                connections["default"].close_if_unusable_or_obsolete()
    body = {"status": "unavailable" if failed else "ok", "checks": checks}
    if failed:
        body["failing"] = failed
    return JsonResponse(body, status=503 if failed else 200)
