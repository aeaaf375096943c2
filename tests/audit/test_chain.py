"""The hash chain: sealed after commit, in commit order, gap-free, hashes as specified."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.db import transaction

from broker import audit
from broker.audit import chain
from broker.audit.canonical import GENESIS, canonical_json, event_hash, format_time
from broker.audit.rows import iter_sealed
from broker.audit.verify import verify_database
from broker.models import AuditEvent

from .conftest import raw_connection, record_many

pytestmark = pytest.mark.django_db(transaction=True)


def chain_rows() -> list[dict]:
    with transaction.atomic():
        return list(iter_sealed())


def test_events_are_sealed_after_commit_in_order_and_linked():
    with transaction.atomic():
        first = audit.record("test.one", actor="alice", idp="corp", reason="r1", detail={"x": [1, 2]})
        second = audit.record("test.two", actor="bob")
        assert AuditEvent.objects.get(pk=first.pk).seq is None  # nothing sealed before the commit
    third = audit.record("test.three")  # autocommit: sealed at once

    rows = chain_rows()
    assert [r["id"] for r in rows] == [first.pk, second.pk, third.pk]
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == GENESIS
    assert rows[1]["prev_hash"] == rows[0]["hash"] and rows[2]["prev_hash"] == rows[1]["hash"]
    assert verify_database(public_keys={}).ok


def test_hash_is_sha256_of_canonical_json_and_prev_hash():
    when = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    event = audit.record("test.hash", actor="älice", idp="corp", subject="s", reason="why", z=1, a="ü")
    row = AuditEvent.objects.values().get(pk=event.pk)
    body = {
        "id": row["id"], "seq": row["seq"], "time": format_time(row["time"]), "action": "test.hash",
        "outcome": "success", "actor": "älice", "source_ip": None, "request_id": "", "idp": "corp",
        "subject": "s", "reason": "why", "data": {"a": "ü", "z": 1},
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_json(body) == text
    assert b'"time":"' + format_time(row["time"]).encode() in text
    assert b"\xc3\xa4lice" in text  # UTF-8, not \\u escapes
    assert row["hash"] == hashlib.sha256(text + row["prev_hash"].encode()).hexdigest()
    assert format_time(when) == "2024-05-01T12:00:00.123456Z"


def test_rolled_back_event_takes_no_sequence_number():
    audit.record("test.before")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record("test.rolled_back")
        raise RuntimeError("the action failed")
    audit.record("test.after")
    assert [(r["seq"], r["action"]) for r in chain_rows()] == [(1, "test.before"), (2, "test.after")]


def test_seal_follows_commit_order_not_id_order():
    """A transaction that inserted first but commits last is sealed last."""
    with raw_connection() as slow:
        slow.execute("BEGIN")
        slow.execute("INSERT INTO broker_auditevent (time, action, outcome, actor, request_id, idp, subject, "
                     "reason, data) VALUES (now(), 'test.slow', 'success', '', '', '', '', '', '{}')")
        audit.record("test.fast")  # committed and sealed while the slow one is still open
        slow.execute("COMMIT")
    chain.seal()
    rows = chain_rows()
    assert [r["action"] for r in rows] == ["test.fast", "test.slow"]
    assert rows[1]["id"] < rows[0]["id"]
    assert verify_database(public_keys={}).ok


def test_straggler_far_below_the_head_is_sealed_by_the_sweep(monkeypatch):
    """An event committed long after later events were sealed is still picked up."""
    monkeypatch.setattr(chain, "SLACK", 2)
    with raw_connection() as slow:
        slow.execute("BEGIN")
        slow.execute("INSERT INTO broker_auditevent (time, action, outcome, actor, request_id, idp, subject, "
                     "reason, data) VALUES (now(), 'test.straggler', 'success', '', '', '', '', '', '{}')")
        record_many(6)
        slow.execute("COMMIT")
    result = chain.seal(sweep=False)  # near the head only: too far below
    assert result.sealed == 0 and chain.unsealed_count() == 1
    assert chain.seal().sealed == 1  # the sweep (default for explicit seals)
    assert [r["seq"] for r in chain_rows()] == list(range(1, 8))


def test_seal_inside_a_transaction_and_batches():
    with transaction.atomic():
        record_many(12)
        result = chain.seal(batch=5)  # Django cursor path, inside the caller's transaction
        assert result.sealed == 12 and result.head_seq == 12
    assert chain.seal().sealed == 0
    assert [r["seq"] for r in chain_rows()] == list(range(1, 13))


def test_many_events_in_one_transaction_schedule_one_seal(monkeypatch):
    calls = []
    original = chain.seal
    monkeypatch.setattr(chain, "seal", lambda *a, **k: calls.append(k) or original(*a, **k))
    with transaction.atomic():
        record_many(5)
        with transaction.atomic():
            audit.record("test.nested")
    assert len(calls) == 1
    assert chain.unsealed_count() == 0


def test_data_round_trip_keeps_the_hash_stable():
    """What verification reads back from jsonb/inet hashes like what the sealer read."""
    audit.record("test.values", big=10**20, small=1e-7, floaty=1.0, huge=1e16, text="line\nbreak\u2028",
                 nested={"b": [True, None, {"k": "v"}], "a": -0.5})
    report = verify_database(public_keys={})
    assert report.ok, report.text()
    row = chain_rows()[0]
    assert event_hash({k: row[k] for k in row if k not in ("prev_hash", "hash")},
                      row["prev_hash"]) == row["hash"]


def test_critical_section_is_measured():
    chain.reset_stats()
    record_many(3)
    stats = chain.stats()
    assert stats["seals"] >= 1
    assert stats["critical_ms"]["n"] >= 1 and stats["critical_ms"]["max"] >= 0
    assert stats["server_critical_ms"]["n"] >= 1
