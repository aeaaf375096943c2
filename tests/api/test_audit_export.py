"""The auditor's export through the Admin API, verified offline with only the public key."""

from __future__ import annotations

import datetime as dt

import pytest

from broker import audit
from broker.audit import offline, signing
from broker.models import AuditEvent
from tests.audit.conftest import audit_files  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def _window() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    return {"since": (now - hour).isoformat(), "until": (now + hour).isoformat()}


def test_auditor_exports_and_the_file_verifies_offline(api, audit_files, tmp_path):  # noqa: F811
    for n in range(5):
        audit.record("test.event", n=n)
    response = api.auditor().get("/api/v1/audit/events/export/", _window())
    assert response.status_code == 200, response.content[:500]
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"".join(response.streaming_content))
    report = offline.verify_export(path, signing.load_public(audit_files.public))
    assert report.ok, report.problems
    assert AuditEvent.objects.filter(action__startswith="audit.export").exists()

    lines = path.read_bytes().splitlines(keepends=True)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines[:1] + lines[2:]))  # one line dropped
    assert not offline.verify_export(tampered, signing.load_public(audit_files.public)).ok


def test_plain_users_cannot_export(api, audit_files):  # noqa: F811
    assert api.plain().get("/api/v1/audit/events/export/", _window()).status_code == 403
    assert api.client().get("/api/v1/audit/events/export/", _window()).status_code == 401
