"""Settings: the embedded default (SQLite) and a production environment."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys

from tests.servers import ROOT, BrokerServer


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


def _production_env() -> dict[str, str]:
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/portal_sso",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "BASE_URL": "https://sso.example.com",
        "ALLOWED_HOSTS": "sso.example.com",
    }


def test_check_deploy_is_clean_in_production():
    result = _manage(_production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_cookie_and_transport_settings():
    code = ("from django.conf import settings as s; import json; print(json.dumps({"
            "'session': s.SESSION_COOKIE_NAME, 'csrf': s.CSRF_COOKIE_NAME, "
            "'secure': [s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE], "
            "'httponly': s.SESSION_COOKIE_HTTPONLY, 'samesite': s.SESSION_COOKIE_SAMESITE, "
            "'hsts': s.SECURE_HSTS_SECONDS, 'debug': s.DEBUG}))")
    result = _manage(_production_env(), "shell", "--no-imports", "-c", code)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values == {
        "session": "__Host-sso_session", "csrf": "__Host-csrftoken", "secure": [True, True],
        "httponly": True, "samesite": "Lax", "hsts": 31536000, "debug": False,
    }


def test_secret_key_required_when_debug_is_off():
    env = _production_env()
    del env["SECRET_KEY"]
    result = _manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stdout


def test_redis_errors_are_not_swallowed():
    env = {**_production_env(), "DEBUG": "0"}
    code = ("from django.conf import settings as s; "
            "print(s.DJANGO_REDIS_IGNORE_EXCEPTIONS, s.CACHES['default']['OPTIONS']['IGNORE_EXCEPTIONS'])")
    result = _manage(env, "shell", "--no-imports", "-c", code)
    assert result.stdout.split() == ["False", "False"]


def test_embedded_default_serves_on_sqlite(tmp_path):
    """No DATABASE_URL/REDIS_URL: SQLite under var/, local memory, a generated 0600 key."""
    env = {"BROKER_VAR_DIR": str(tmp_path)}
    server = BrokerServer(env, migrate=True)
    try:
        assert server.get("/healthz")[0] == 200
        status, _, body = server.get("/sso/")
        assert status == 200
        assert b"Sign in" in body
        status, _, body = server.get("/readyz")
        assert status == 200
        assert json.loads(body)["checks"] == {"database": "ok", "cache": "ok"}
    finally:
        server.stop()
    assert (tmp_path / "broker.sqlite3").exists()
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 50
