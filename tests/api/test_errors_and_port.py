"""The Admin API's error contract (JSON code + message, proper status, never a 500 for bad
input, 503 when a backend is down) and the management-port restriction."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from broker.protocols.oidc import jwks
from tests.api.conftest import API, call
from tests.servers import ROOT, free_port

pytestmark = pytest.mark.django_db


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"], body
    return body


def test_error_shapes(api):
    client = api.admin()
    _error(client.get(f"{API}/nothing-here/"), 404, "not_found")
    _error(client.get("/api/v2/roles/"), 404, "not_found")
    put = call(client, "PUT", f"{API}/roles/portal_admin/", {"description": "x"})
    _error(put, 405, "method_not_allowed")
    malformed = client.post(f"{API}/roles/", data="{not json", content_type="application/json")
    _error(malformed, 400, "parse_error")
    form = client.post(f"{API}/roles/", data="name=x", content_type="application/x-www-form-urlencoded")
    _error(form, 415, "unsupported_media_type")
    invalid = call(client, "POST", f"{API}/roles/", {"name": "bad name!", "description": 5})
    body = _error(invalid, 400, "invalid")
    assert "name" in body["errors"] and "name" in body["message"]
    _error(call(client, "POST", f"{API}/roles/", {"name": "portal_admin"}), 409, "already_exists")


def test_missing_trailing_slash_redirects_like_the_rest_of_the_site(api):
    response = api.admin().get(f"{API}/roles", {"limit": 1})
    assert response.status_code == 301 and response["Location"] == f"{API}/roles/?limit=1"


def test_jwks_unavailable_is_503_not_401(api):
    """The token may well be valid: the issuer's keys cannot be had. Fail closed, visibly."""
    cache.delete(jwks._cache_key("op"))
    api.fake.status["jwks"] = 503
    response = api.admin().get(f"{API}/roles/")
    body = _error(response, 503, "temporarily_unavailable")
    assert "key" in body["message"]


def test_redis_down_is_503(api, redis_process):
    token = api.token()
    with override_settings(CACHES=redis_process.cache_settings()):
        redis_process.stop()
        _error(api.client(token).get(f"{API}/roles/"), 503, "backend_unavailable")


def test_oversized_token_is_401(api):
    _error(api.client("x" * 20000).get(f"{API}/roles/"), 401, "invalid_token")


# --- management port ---------------------------------------------------------------------------


@override_settings(ADMIN_SURFACES_PORTS=["8443"])
def test_admin_surfaces_answer_only_on_the_management_port(api):
    client = api.admin()
    public = {"SERVER_PORT": "443"}
    _error(client.get(f"{API}/roles/", **public), 404, "not_found")
    _error(client.get("/api/schema/", **public), 404, "not_found")
    assert client.get("/admin/", **public).status_code == 404
    assert client.get("/admin/login/", **public).status_code == 404
    assert client.get("/admin", **public).status_code == 404
    # Headers the client controls change nothing.
    spoofed = client.get(f"{API}/roles/", SERVER_PORT="443", HTTP_HOST="sso.test:8443",
                         HTTP_X_FORWARDED_PORT="8443")
    assert spoofed.status_code == 404
    # The management port serves them.
    assert client.get(f"{API}/roles/", SERVER_PORT="8443").status_code == 200
    assert Client().get("/admin/", SERVER_PORT="8443").status_code == 302  # to the admin login
    # Everything else is untouched on the public port.
    assert Client().get("/sso/", **public).status_code == 200
    assert Client().get("/healthz", **public).status_code == 200
    assert Client().get("/administrator-guide", **public).status_code == 404  # not an admin surface


def test_no_restriction_by_default(api):
    assert api.admin().get(f"{API}/roles/", SERVER_PORT="12345").status_code == 200


def _get(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_real_gunicorn_with_two_listeners():
    """End to end: gunicorn on a public and a management port; SERVER_PORT is the listener's."""
    public, management = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "portal_sso.settings", "SECRET_KEY": "t" * 50,
        "DATABASE_URL": os.environ["DATABASE_URL"], "REDIS_URL": os.environ["REDIS_URL"],
        "REDIS_KEY_PREFIX": os.environ.get("REDIS_KEY_PREFIX", "sso-test") + "-port",
        "BASE_URL": "http://127.0.0.1", "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0",
        "ADMIN_SURFACES_PORTS": str(management),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal_sso.wsgi", "-w", "1", "-b", f"127.0.0.1:{public}",
         "-b", f"127.0.0.1:{management}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", management), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "gunicorn did not start"
                time.sleep(0.1)
        assert _get(f"http://127.0.0.1:{public}/api/v1/roles/") == 404
        assert _get(f"http://127.0.0.1:{public}/api/v1/roles/", {"Host": f"127.0.0.1:{management}"}) == 404
        assert _get(f"http://127.0.0.1:{management}/api/v1/roles/") == 401
        assert _get(f"http://127.0.0.1:{public}/healthz") == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
