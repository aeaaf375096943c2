"""Append-only in the database itself: triggers (ENABLE ALWAYS) and the two-role privileges."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from broker import audit
from broker.audit import chain, checkpoints, setup

from .conftest import db_url, manage, raw_connection, record_many, run, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

APPEND_ONLY = "append-only"


def sealed_id() -> int:
    return record_many(1)[0].pk


@pytest.fixture
def one_checkpoint(audit_files):
    record_many(2)
    return checkpoints.create("manual")


def refused(conn: psycopg.Connection, sql: str, params=(), *, error=errors.RaiseException, text=APPEND_ONLY):
    with pytest.raises(error) as info:
        conn.execute(sql, params)
    assert text in str(info.value), str(info.value)
    return str(info.value)


def test_triggers_are_installed_and_enabled_always():
    assert setup.trigger_problems() == []
    with raw_connection() as conn:
        states = dict(conn.execute("SELECT tgname, tgenabled FROM pg_trigger "
                                   "WHERE tgname LIKE 'broker_audit_%'"))
    assert len(states) == 7 and set(states.values()) == {"A"}


def test_superuser_without_the_test_flush_opening_is_refused_everything():
    event_id = sealed_id()
    with raw_connection() as conn:
        refused(conn, "UPDATE broker_auditevent SET reason = 'tampered' WHERE id = %s", [event_id])
        refused(conn, "UPDATE broker_auditevent SET seq = 99 WHERE id = %s", [event_id])
        refused(conn, "DELETE FROM broker_auditevent WHERE id = %s", [event_id])
        refused(conn, "TRUNCATE broker_auditevent")
        # session_replication_role = replica skips ordinary triggers, not ENABLE ALWAYS ones
        conn.execute("SET session_replication_role = replica")
        refused(conn, "UPDATE broker_auditevent SET reason = 'tampered' WHERE id = %s", [event_id])
        refused(conn, "DELETE FROM broker_auditevent")
        refused(conn, "TRUNCATE broker_auditevent")
        # an INSERT cannot claim a place in the chain
        refused(conn, "INSERT INTO broker_auditevent (time, action, outcome, actor, request_id, idp, "
                      "subject, reason, data, seq, prev_hash, hash) VALUES (now(), 'x', 'success', '', '', "
                      "'', '', '', '{}', 2, repeat('0', 64), repeat('1', 64))", text="must leave seq")


def test_sealing_is_the_only_update_and_happens_once():
    with raw_connection() as conn:
        conn.execute("INSERT INTO broker_auditevent (time, action, outcome, actor, request_id, idp, subject, "
                     "reason, data) VALUES (now(), 'x', 'success', '', '', '', '', '', '{}')")
        event_id = conn.execute("SELECT max(id) FROM broker_auditevent").fetchone()[0]
        # sealing together with another column change: refused
        refused(conn,
                "UPDATE broker_auditevent SET seq = 1, prev_hash = repeat('0', 64), hash = repeat('1', 64), "
                      "reason = 'x' WHERE id = %s", [event_id])
        # only part of the chain columns: refused
        refused(conn, "UPDATE broker_auditevent SET seq = 1 WHERE id = %s", [event_id])
    assert chain.seal().sealed == 1
    with raw_connection() as conn:  # sealed: the chain columns are final
        refused(conn,
                "UPDATE broker_auditevent SET seq = 5, prev_hash = repeat('0', 64), hash = repeat('1', 64) "
                      "WHERE id = %s", [event_id])


def test_checkpoint_rows_are_append_only_too(one_checkpoint):
    with raw_connection() as conn:
        refused(conn, "UPDATE broker_auditcheckpoint SET seq = 1")
        refused(conn, "DELETE FROM broker_auditcheckpoint")
        refused(conn, "TRUNCATE broker_auditcheckpoint")


def test_the_test_flush_opening_needs_a_superuser(db_roles):
    owner, _ = db_roles
    with raw_connection() as conn:
        conn.execute("SET broker.audit_allow_truncate = on")
        conn.execute(f'SET ROLE "{owner}"')
        refused(conn, "TRUNCATE broker_auditevent")


def test_application_role_may_insert_and_seal_only(db_roles):
    _, app = db_roles
    event_id = sealed_id()
    with raw_connection(app) as conn:
        assert conn.execute("SELECT count(*) FROM broker_auditevent").fetchone()[0] >= 1
        conn.execute("INSERT INTO broker_auditevent (time, action, outcome, actor, request_id, idp, subject, "
                     "reason, data) VALUES (now(), 'app.insert', 'success', '', '', '', '', '', '{}')")
        denied = errors.InsufficientPrivilege
        refused(conn, "UPDATE broker_auditevent SET reason = 'x' WHERE id = %s", [event_id], error=denied,
                text="permission denied")
        refused(conn, "DELETE FROM broker_auditevent WHERE id = %s", [event_id], error=denied,
                text="permission denied")
        refused(conn, "TRUNCATE broker_auditevent", error=denied, text="permission denied")
        refused(conn, "UPDATE broker_auditcheckpoint SET seq = 1", error=denied, text="permission denied")
        refused(conn, "ALTER TABLE broker_auditevent DISABLE TRIGGER ALL", error=denied, text="must be owner")
        # the column privilege lets it seal; the trigger still refuses re-sealing
        refused(conn, "UPDATE broker_auditevent SET seq = 999, prev_hash = repeat('0', 64), "
                      "hash = repeat('1', 64) WHERE id = %s", [event_id])
    # and the application, connected as this role, records and seals (a real process)
    proc = manage("shell", "-c", "from broker import audit; audit.record('app.recorded')",
                  env=subprocess_env(DATABASE_URL=db_url(app)))
    assert proc.returncode == 0, proc.stderr
    proc = manage("audit", "seal", env=subprocess_env(DATABASE_URL=db_url(app)))
    assert proc.returncode == 0, proc.stderr
    assert chain.unsealed_count() == 0


def test_owner_role_is_refused_by_the_triggers(db_roles):
    owner, _ = db_roles
    event_id = sealed_id()
    with raw_connection() as conn:
        conn.execute(f'SET ROLE "{owner}"')
        refused(conn, "UPDATE broker_auditevent SET reason = 'x' WHERE id = %s", [event_id])
        refused(conn, "DELETE FROM broker_auditevent WHERE id = %s", [event_id])
        refused(conn, "TRUNCATE broker_auditevent")
        refused(conn, "DELETE FROM broker_auditcheckpoint")


def test_setup_roles_is_idempotent_and_refuses_a_superuser_app_role(db_roles):
    owner, app = db_roles
    out = run("audit", "setup-roles", f"--owner-role={owner}", f"--app-role={app}")
    assert "GRANT UPDATE (seq, prev_hash, hash) ON broker_auditevent" in out
    with raw_connection() as conn:
        table_owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'broker_auditevent'")
        assert table_owner.fetchone()[0] == owner
        grants = {r[0] for r in conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants WHERE grantee = %s AND "
            "table_name = 'broker_auditevent'", [app])}
    assert grants == {"SELECT", "INSERT"}
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="superuser"):
        run("audit", "setup-roles", f"--owner-role={owner}", "--app-role=postgres")


def test_dry_run_prints_the_sql_and_changes_nothing():
    out = run("audit", "setup-roles", "--owner-role=x_owner", "--app-role=x_app", "--dry-run")
    assert 'ALTER TABLE broker_auditevent OWNER TO "x_owner"' in out
    assert 'GRANT SELECT, INSERT ON broker_auditevent, broker_auditcheckpoint TO "x_app"' in out
    with raw_connection() as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'x_owner'").fetchone() is None


def test_verify_reports_a_trigger_left_disabled():
    audit.record("test.x")
    with raw_connection() as conn:
        conn.execute("ALTER TABLE broker_auditevent DISABLE TRIGGER broker_audit_event_delete")
        try:
            from broker.audit.verify import verify_database

            report = verify_database(public_keys={})
            assert not report.ok
            assert "broker_audit_event_delete on broker_auditevent is disabled" in report.text()
            run("audit", "setup-roles", "--triggers-only")
            assert verify_database(public_keys={}).ok
        finally:
            conn.execute("ALTER TABLE broker_auditevent ENABLE ALWAYS TRIGGER broker_audit_event_delete")
