"""/healthz and /readyz, against real dependencies that really go away."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tests.servers import BrokerServer, free_port


@pytest.mark.django_db
def test_healthz_and_readyz_ok(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_readyz_503_when_redis_is_stopped(client, redis_process):
    with override_settings(CACHES=redis_process.cache_settings()):
        assert client.get("/readyz").status_code == 200
        redis_process.stop()
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unavailable")


def test_readyz_503_when_postgresql_is_unreachable(tmp_path):
    # A real server process whose DATABASE_URL points at a port where nothing listens.
    server = BrokerServer({
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/portal_sso",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "SECRET_KEY": "k" * 60,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DB_CONNECT_TIMEOUT": "2",
        "BROKER_VAR_DIR": str(tmp_path),
    })
    try:
        status, _, body = server.get("/readyz")
        assert status == 503
        payload = json.loads(body)
        assert payload["failing"] == ["database"]
        assert payload["checks"]["redis"] == "ok"
        status, _, _ = server.get("/healthz")
        assert status == 200  # alive, just not ready
    finally:
        server.stop()
