"""The signing key and signed checkpoints (database + sink file + webhook)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.management.base import CommandError

from broker.audit import checkpoints, signing
from broker.audit.canonical import checkpoint_line_statement
from broker.models.audit import AuditCheckpoint

from .conftest import record_many, run

pytestmark = pytest.mark.django_db(transaction=True)


def test_keygen_writes_a_0600_key_and_a_public_key(tmp_path, settings):
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "keys" / "audit.key"
    out = run("audit", "keygen")
    key, pub = tmp_path / "keys" / "audit.key", tmp_path / "keys" / "audit.pub"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "keys").stat().st_mode & 0o777) == "0o700"
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    fingerprint = signing.fingerprint(signing.load_public(pub))
    assert fingerprint in out
    from broker.models import AuditEvent

    event = AuditEvent.objects.get(action="audit.key_generated")
    assert event.data["fingerprint"] == fingerprint and "PRIVATE" not in json.dumps(event.data)

    with pytest.raises(CommandError, match="already exists") as info:
        run("audit", "keygen")
    assert info.value.returncode == 2
    run("audit", "keygen", "--force")
    assert signing.fingerprint(signing.load_public(pub)) != fingerprint
    kept = signing.known_public_keys(key)
    assert fingerprint in kept and len(kept) == 2  # the replaced public key still verifies old checkpoints


def test_checkpoint_on_demand_is_signed_stored_and_appended_to_the_sink(audit_files):
    record_many(4)
    out = run("audit", "checkpoint")
    cp = AuditCheckpoint.objects.get()
    assert f"Checkpoint #{cp.pk}: seq 4" in out
    line = json.loads(audit_files.sink.read_text().splitlines()[0])
    assert line == checkpoints.as_line(cp)
    key = signing.load_public(audit_files.public)
    assert signing.verify(key, checkpoint_line_statement(line), line["signature"])
    assert not signing.verify(key, {**checkpoint_line_statement(line), "seq": 5}, line["signature"])


def test_checkpoint_every_n_events(audit_files, settings):
    settings.AUDIT_CHECKPOINT_EVERY = 5
    record_many(12)
    assert list(AuditCheckpoint.objects.order_by("seq").values_list("seq", "reason")) == [(5, "events"),
                                                                                        (10, "events")]
    assert len(audit_files.sink.read_text().splitlines()) == 2


def test_checkpoint_after_t_seconds(audit_files, settings, monkeypatch):
    settings.AUDIT_CHECKPOINT_EVERY = 0
    settings.AUDIT_CHECKPOINT_SECONDS = 60
    monkeypatch.setattr(checkpoints, "_next_time_check", 0.0)
    monkeypatch.setattr(checkpoints, "_last_checkpoint_age", lambda using: 61.0)
    record_many(1)
    assert AuditCheckpoint.objects.get().reason == "time"


def test_no_key_no_automatic_checkpoint_but_events_still_recorded(tmp_path, settings, caplog):
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "none.key"
    settings.AUDIT_CHECKPOINT_EVERY = 1
    record_many(2)
    assert not AuditCheckpoint.objects.exists()
    from broker.models import AuditEvent

    assert AuditEvent.objects.filter(seq__isnull=False).count() == 2
    with pytest.raises(CommandError, match="audit keygen"):
        run("audit", "checkpoint")


class _Hook(BaseHTTPRequestHandler):
    received: list[bytes] = []
    status = 204

    def do_POST(self):  # noqa: N802
        _Hook.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(_Hook.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received, _Hook.status = [], 204
    yield f"http://127.0.0.1:{server.server_port}/checkpoints", _Hook
    server.shutdown()


def test_checkpoint_is_posted_to_the_webhook(audit_files, settings, webhook):
    url, hook = webhook
    settings.AUDIT_CHECKPOINT_WEBHOOK = url
    record_many(2)
    run("audit", "checkpoint")
    assert len(hook.received) == 1
    assert json.loads(hook.received[0]) == checkpoints.as_line(AuditCheckpoint.objects.get())


def test_webhook_failure_is_reported_not_fatal(audit_files, settings, webhook):
    url, hook = webhook
    hook.status = 500
    settings.AUDIT_CHECKPOINT_WEBHOOK = url
    record_many(2)
    with pytest.raises(CommandError, match="not published"):
        run("audit", "checkpoint")
    assert AuditCheckpoint.objects.count() == 1  # stored anyway, and in the sink
    assert len(audit_files.sink.read_text().splitlines()) == 1


def test_unwritable_sink_is_logged_not_fatal(audit_files, settings, caplog):
    settings.AUDIT_CHECKPOINT_SINK = audit_files.dir  # a directory: cannot be opened for append
    settings.AUDIT_CHECKPOINT_EVERY = 2
    record_many(3)  # the automatic checkpoint must not break recording
    assert AuditCheckpoint.objects.count() == 1
    assert "not written to the sink" in caplog.text
