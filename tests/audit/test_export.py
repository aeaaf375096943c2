"""Exports for auditors and their offline verification (no database, no secret)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.core.management.base import CommandError

from broker.audit import offline, signing
from broker.models import AuditEvent

from .conftest import REPO, manage, record_many, run, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)
ALL = ["--since=2000-01-01", "--until=2100-01-01"]


@pytest.fixture
def events(audit_files):
    return record_many(30, note="line\nbreak, \"quoted\" ü")


def export(path, *extra: str) -> str:
    return run("audit", "export", *ALL, f"--output={path}", *extra)


def check(path, audit_files, **kwargs):
    return offline.verify_export(path, signing.load_public(audit_files.public), **kwargs)


def lines_of(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# --- the happy path -------------------------------------------------------------------------------


def test_jsonl_export_carries_seq_hashes_and_a_signed_manifest(events, audit_files):
    path = audit_files.dir / "audit.jsonl"
    out = export(path)
    assert "Exported 30 event(s), seq 1..30" in out
    lines = lines_of(path)
    assert len(lines) == 31
    first = json.loads(lines[0])
    assert set(first) >= {"seq", "prev_hash", "hash", "time", "action", "actor", "data"}
    manifest = json.loads(lines[-1])["manifest"]
    assert manifest["count"] == 30 and manifest["contiguous"] is True
    assert manifest["range"] == {"first_seq": 1, "last_seq": 30}
    assert manifest["first"]["hash"] == first["hash"] and manifest["last"]["seq"] == 30
    assert manifest["checkpoint"]["seq"] >= 30 and manifest["checkpoint"]["signature"]
    assert manifest["public_key_fingerprint"] == signing.fingerprint(signing.load_public(audit_files.public))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    report = check(path, audit_files)
    assert report.ok, report.text()
    assert report.summary["events"] == 30 and report.summary["checkpoints checked"] >= 1


def test_every_export_is_audited(events, audit_files):
    export(audit_files.dir / "a.jsonl", "--action=test.event")
    event = AuditEvent.objects.filter(action="audit.exported").get()
    assert event.actor.startswith("cli:")
    assert event.data["filters"]["action"] == "test.event"
    assert event.data["format"] == "jsonl" and event.data["range"] == {"first_seq": 1, "last_seq": 30}


def test_csv_export_with_its_manifest_file(events, audit_files):
    path = audit_files.dir / "audit.csv"
    export(path, "--format=csv")
    assert offline.sidecar(path).exists()
    assert lines_of(path)[0].startswith(b"id,seq,time,action")
    report = check(path, audit_files)
    assert report.ok, report.text()


def test_filtered_export_verifies_and_keeps_only_matching_events(events, audit_files):
    path = audit_files.dir / "alice.jsonl"
    export(path, "--actor=user1", "--idp=corp")
    rows = [json.loads(line) for line in lines_of(path)[:-1]]
    assert rows and all(r["actor"] == "user1" and r["idp"] == "corp" for r in rows)
    manifest = json.loads(lines_of(path)[-1])["manifest"]
    assert manifest["contiguous"] is False and manifest["count"] == len(rows)
    assert check(path, audit_files).ok


def test_time_window(audit_files):
    import datetime as dt

    record_many(3)
    cutoff = dt.datetime.now(dt.UTC)
    record_many(2)
    path = audit_files.dir / "late.jsonl"
    run("audit", "export", f"--since={cutoff.isoformat()}", "--until=2100-01-01", f"--output={path}")
    assert [json.loads(x)["seq"] for x in lines_of(path)[:-1]] == [4, 5]
    assert check(path, audit_files).ok


def test_empty_range_and_bad_arguments(events, audit_files):
    path = audit_files.dir / "none.jsonl"
    run("audit", "export", "--since=1990-01-01", "--until=1991-01-01", f"--output={path}")
    assert json.loads(lines_of(path)[-1])["manifest"]["count"] == 0
    assert check(path, audit_files).ok
    with pytest.raises(CommandError) as info:
        run("audit", "export", "--since=2020-01-02", "--until=2020-01-01", f"--output={path}")
    assert info.value.returncode == 2
    with pytest.raises(CommandError, match="not a date"):
        run("audit", "export", "--since=yesterday", "--until=2020-01-01", f"--output={path}")


def test_export_refused_without_a_signing_key(events, audit_files, settings):
    settings.AUDIT_SIGNING_KEY_FILE = audit_files.dir / "missing.key"
    with pytest.raises(CommandError, match="audit keygen"):
        export(audit_files.dir / "x.jsonl")


# --- tampered exports ------------------------------------------------------------------------------


def tamper_jsonl(path, how: str) -> None:
    lines = lines_of(path)
    if how == "byte":
        line = bytearray(lines[11])
        at = line.index(b'"reason":"') + len(b'"reason":"')
        line[at:at] = b"x"  # one added byte inside a value
        lines[11] = bytes(line)
    elif how == "flip":
        line = bytearray(lines[11])
        at = line.index(b'"actor":"user') + len(b'"actor":"user')
        line[at] = ord("7")  # one changed byte
        lines[11] = bytes(line)
    elif how == "drop":
        del lines[11]
    elif how == "swap":
        lines[11], lines[12] = lines[12], lines[11]
    elif how == "drop_last_event":
        del lines[-2]
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(("how", "kind", "seq"), [
    ("flip", "changed", 12), ("byte", "changed", 12), ("drop", "missing", 12), ("swap", "reordered", 12),
    ("drop_last_event", "truncated", 30),
])
def test_tampered_jsonl_is_detected(events, audit_files, how, kind, seq):
    path = audit_files.dir / "audit.jsonl"
    export(path)
    tamper_jsonl(path, how)
    report = check(path, audit_files)
    assert not report.ok
    first = report.first()
    assert (first.kind, first.seq) == (kind, seq), report.text()


@pytest.mark.parametrize("how", ["flip", "drop", "swap"])
def test_tampered_filtered_export_is_detected(events, audit_files, how):
    path = audit_files.dir / "filtered.jsonl"
    export(path, "--actor=user1")
    lines = lines_of(path)
    if how == "flip":
        lines[2] = lines[2].replace(b'"outcome":"success"', b'"outcome":"failure"')
    elif how == "drop":
        del lines[2]
    else:
        lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))
    report = check(path, audit_files)
    assert not report.ok
    assert report.first().kind in {"changed", "missing", "reordered"}, report.text()
    if how == "drop":
        assert any("digest" in p.detail for p in report.problems)


@pytest.mark.parametrize("how", ["flip", "drop", "swap"])
def test_tampered_csv_is_detected(events, audit_files, how):
    path = audit_files.dir / "audit.csv"
    export(path, "--format=csv")
    text = path.read_bytes()
    records = text.split(b"\n")
    if how == "flip":
        records[5] = records[5].replace(b",success,", b",failure,")
    elif how == "drop":
        del records[5]
    else:
        records[5], records[6] = records[6], records[5]
    path.write_bytes(b"\n".join(records))
    report = check(path, audit_files)
    assert not report.ok, report.text()


def test_edited_manifest_or_another_key(events, audit_files, tmp_path):
    path = audit_files.dir / "audit.jsonl"
    export(path)
    lines = lines_of(path)
    manifest = json.loads(lines[-1])
    manifest["manifest"]["count"] = 29
    path.write_bytes(b"".join(lines[:-1]) + json.dumps(manifest).encode() + b"\n")
    assert any(p.kind == "signature" for p in check(path, audit_files).problems)

    other = tmp_path / "other.key"
    signing.generate(other)
    report = offline.verify_export(path, signing.load_public(signing.public_path(other)))
    assert not report.ok and "not with the given key" in report.text()


# --- offline: no database, no secret ---------------------------------------------------------------


def test_cli_verifies_an_export_without_any_database(events, audit_files):
    path = audit_files.dir / "audit.jsonl"
    export(path)
    # A DATABASE_URL nobody listens on, no signing key: the check must not need either.
    env = subprocess_env(DATABASE_URL="postgres://nobody@127.0.0.1:9/none",
                         AUDIT_SIGNING_KEY_FILE="/nonexistent")
    proc = manage("audit", "verify", f"--export={path}", f"--public-key={audit_files.public}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"OK: {path}: events 30")

    tamper_jsonl(path, "swap")
    proc = manage("audit", "verify", f"--export={path}", f"--public-key={audit_files.public}", env=env)
    assert proc.returncode == 1
    assert "first bad seq 12: reordered" in proc.stdout


def test_standalone_verifier_needs_no_django(events, audit_files):
    path = audit_files.dir / "audit.jsonl"
    export(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE"))}
    code = ("import sys, runpy; sys.modules['django'] = None; "  # importing Django would fail
            "sys.argv = ['offline', sys.argv[1], '--public-key', sys.argv[2]]; "
            "runpy.run_module('broker.audit.offline', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(audit_files.public)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK:")
