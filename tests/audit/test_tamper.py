"""A superuser disables the triggers and edits the log: ``audit verify`` names the first bad seq."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError

from broker.audit import checkpoints, signing
from broker.audit.verify import verify_database

from .conftest import record_many, run, triggers_off

pytestmark = pytest.mark.django_db(transaction=True)


def keys(audit_files) -> dict:
    key = signing.load_public(audit_files.public)
    return {signing.fingerprint(key): key}


def first_problem(audit_files):
    report = verify_database(public_keys=keys(audit_files))
    assert not report.ok, report.text()
    return report.first(), report


@pytest.fixture
def log(audit_files):
    """Ten sealed events and a checkpoint (also in the sink) at seq 10."""
    record_many(10)
    cp = checkpoints.create("manual")
    checkpoints.publish(cp, wait=True)
    assert verify_database(public_keys=keys(audit_files)).ok
    return cp


def test_intact_log_verifies_and_the_cli_exits_0(log, audit_files):
    out = run("audit", "verify")
    assert out.startswith("OK: database: events 10, head seq 10")


def test_edited_row(log, audit_files):
    with triggers_off() as conn:
        conn.execute("UPDATE broker_auditevent SET reason = 'innocent' WHERE seq = 4")
    first, _ = first_problem(audit_files)
    assert (first.seq, first.kind) == (4, "changed")
    with pytest.raises(CommandError) as info:
        run("audit", "verify")
    assert info.value.returncode == 1
    assert "first bad seq 4: changed" in str(info.value) or "seq 4: changed" in str(info.value)


def test_edited_and_rehashed_row(log, audit_files):
    """The attacker recomputes the edited row's hash: the next row no longer chains to it."""
    from broker.audit.canonical import event_hash
    from broker.audit.rows import normalize
    from broker.models import AuditEvent

    row = AuditEvent.objects.filter(seq=6).values().get()
    forged = {**normalize(row), "reason": "innocent"}
    body = {k: forged[k] for k in ("id", "seq", "time", "action", "outcome", "actor", "source_ip",
                                   "request_id",
                                   "idp", "subject", "reason", "data")}
    with triggers_off() as conn:
        conn.execute("UPDATE broker_auditevent SET reason = 'innocent', hash = %s WHERE seq = 6",
                     [event_hash(body, row["prev_hash"])])
    first, report = first_problem(audit_files)
    assert (first.seq, first.kind) == (6, "changed")
    assert "re-hashed" in first.detail
    assert not any(p.kind == "rewritten" for p in report.problems)  # seq 10 itself is intact


def test_deleted_row(log, audit_files):
    with triggers_off() as conn:
        conn.execute("DELETE FROM broker_auditevent WHERE seq = 5")
    first, _ = first_problem(audit_files)
    assert (first.seq, first.kind) == (5, "missing")


def test_swapped_rows(log, audit_files):
    with triggers_off() as conn:
        conn.execute("UPDATE broker_auditevent SET seq = -3 WHERE seq = 3")
        conn.execute("UPDATE broker_auditevent SET seq = 3 WHERE seq = 7")
        conn.execute("UPDATE broker_auditevent SET seq = 7 WHERE seq = -3")
    first, report = first_problem(audit_files)
    assert (first.seq, first.kind) == (3, "reordered")
    assert "was sealed as seq 7" in first.detail
    assert any(p.seq == 7 and p.kind == "reordered" for p in report.problems)


def test_deleted_tail_is_caught_by_the_external_checkpoint(log, audit_files):
    """Rows 8-10 and the database's checkpoint row go; the sink file outside still has it."""
    with triggers_off() as conn:
        conn.execute("DELETE FROM broker_auditevent WHERE seq >= 8")
        conn.execute("DELETE FROM broker_auditcheckpoint")
    first, report = first_problem(audit_files)
    assert (first.seq, first.kind) == (8, "truncated")
    assert f"tail truncated before any checkpoint: the chain ends at seq 7 but checkpoint #{log.pk} signed " \
           "seq 10 (events 8..10 are gone)" == first.detail
    assert any(p.kind == "checkpoint" and "missing from the database" in p.detail for p in report.problems)


def test_deleted_tail_after_an_earlier_checkpoint(log, audit_files):
    record_many(5)  # seq 11..15
    cp = checkpoints.create("manual")  # signs seq 15
    checkpoints.publish(cp, wait=True)
    with triggers_off() as conn:
        conn.execute("DELETE FROM broker_auditevent WHERE seq >= 13")
    first, _ = first_problem(audit_files)
    assert (first.seq, first.kind) == (13, "truncated")
    assert f"after checkpoint #{log.pk} (seq 10)" in first.detail
    assert f"checkpoint #{cp.pk} signed seq 15" in first.detail


def test_rewritten_chain_disagrees_with_the_signed_checkpoint(log, audit_files):
    """Every hash recomputed after an edit: only the signed checkpoint can tell."""
    from broker.audit import chain
    from broker.audit.canonical import GENESIS
    from broker.audit.rows import row_body
    from broker.models import AuditEvent

    rows = list(AuditEvent.objects.order_by("seq").values())
    rows[2]["reason"] = "innocent"
    prev, forged = GENESIS, []
    for row in rows:
        digest = chain.event_hash(row_body(row, row["seq"]), prev)
        forged.append((row["id"], prev, digest))
        prev = digest
    with triggers_off() as conn:
        conn.execute("UPDATE broker_auditevent SET reason = 'innocent' WHERE seq = 3")
        for event_id, prev_hash, digest in forged:
            conn.execute("UPDATE broker_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                         [prev_hash, digest, event_id])
    first, _ = first_problem(audit_files)
    assert first.kind == "rewritten"  # seq 1 changed hash too: the checkpoints belong to "another chain"


def test_forged_checkpoint_signature(log, audit_files):
    with triggers_off() as conn:
        conn.execute("UPDATE broker_auditcheckpoint SET head_hash = repeat('a', 64)")
    first, report = first_problem(audit_files)
    assert any(p.kind == "signature" for p in report.problems)


def test_no_checkpoint_warns_that_a_deleted_tail_would_go_unseen(audit_files):
    record_many(3)
    report = verify_database(public_keys=keys(audit_files))
    assert report.ok
    assert any("no signed checkpoint" in w for w in report.warnings)
