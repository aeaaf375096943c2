"""Audit log fixtures: a signing key and sink per test, raw connections as other roles, tampering."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from broker import audit
from broker.audit import setup, signing

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def audit_files(tmp_path, settings):
    """A fresh Ed25519 key and checkpoint sink for this test (never the checkout's var/)."""
    key = tmp_path / "audit" / "ed25519.key"
    settings.AUDIT_SIGNING_KEY_FILE = key
    settings.AUDIT_CHECKPOINT_SINK = tmp_path / "audit" / "checkpoints.jsonl"
    settings.AUDIT_CHECKPOINT_WEBHOOK = ""
    signing.generate(key)
    return type("AuditFiles", (), {"key": key, "public": signing.public_path(key),
                                   "sink": settings.AUDIT_CHECKPOINT_SINK, "dir": tmp_path})


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def db_url(user: str | None = None, name: str | None = None) -> str:
    db = connection.settings_dict
    user = user or db["USER"] or "postgres"
    auth = quote(user, safe="")
    if db.get("PASSWORD") and user == db["USER"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name or db['NAME']}"


@contextlib.contextmanager
def raw_connection(user: str | None = None) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection to the test database (no Django, no test-flush option)."""
    with psycopg.connect(db_url(user), autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def triggers_off() -> Iterator[psycopg.Connection]:
    """As a superuser: disable the audit triggers, yield, then put them back ENABLE ALWAYS."""
    with raw_connection() as conn:
        conn.execute("ALTER TABLE broker_auditevent DISABLE TRIGGER ALL")
        conn.execute("ALTER TABLE broker_auditcheckpoint DISABLE TRIGGER ALL")
        try:
            yield conn
        finally:
            for statement in setup.enable_statements():
                conn.execute(statement)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = db_url()
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str] | None = None,
           timeout: int = 120) -> subprocess.CompletedProcess[str]:
    python = REPO / ".venv" / "bin" / "python"
    return subprocess.run([str(python if python.exists() else sys.executable), "manage.py", *args], cwd=REPO,
                          env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def record_many(n: int, **data) -> list:
    return [audit.record("test.event", actor=f"user{i % 3}", idp="corp" if i % 2 else "other",
                         subject=f"s{i}", n=i, **data) for i in range(n)]


@pytest.fixture
def db_roles(transactional_db):
    """``audit setup-roles`` on the test database; roles named after it; dropped afterwards."""
    name = connection.settings_dict["NAME"]
    owner, app = f"{name}_owner"[:63], f"{name}_app"[:63]
    run("audit", "setup-roles", f"--owner-role={owner}", f"--app-role={app}")
    yield owner, app
    with raw_connection() as conn:
        for role in (owner, app):
            conn.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
