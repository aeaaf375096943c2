"""No audit, no action: when the audit insert fails, the change it records is rolled back.

The fault is real: a trigger makes PostgreSQL refuse the audit INSERT (as a full disk, a lost
privilege or a broken constraint would), nothing is mocked.
"""

from __future__ import annotations

import contextlib

import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError

from broker.models import AuditEvent, IdentityProvider, Role, RoleMapping

from .conftest import manage, raw_connection, run

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def audit_insert_fails():
    with raw_connection() as conn:
        conn.execute("CREATE FUNCTION test_audit_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "RAISE EXCEPTION 'injected audit fault'; END $$")
        conn.execute("CREATE TRIGGER test_audit_fault BEFORE INSERT ON broker_auditevent "
                     "FOR EACH ROW EXECUTE FUNCTION test_audit_fault()")
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER test_audit_fault ON broker_auditevent")
            conn.execute("DROP FUNCTION test_audit_fault()")


def test_role_add_is_rolled_back_with_its_audit_event():
    with audit_insert_fails(), pytest.raises(DatabaseError, match="injected audit fault"):
        run("role", "add", "portal_admin")
    assert not Role.objects.filter(name="portal_admin").exists()
    assert not Group.objects.filter(name="role:portal_admin").exists()
    run("role", "add", "portal_admin")  # and with a working audit log it goes through, audited
    assert AuditEvent.objects.filter(action="role.created").count() == 1


def test_role_add_in_a_real_process_fails_and_leaves_nothing():
    with audit_insert_fails():
        proc = manage("role", "add", "portal_admin")
    assert proc.returncode != 0
    assert "injected audit fault" in proc.stderr
    assert not Role.objects.exists() and not AuditEvent.objects.exists()


def test_mapping_role_and_idp_changes_are_rolled_back(make_idp):
    run("role", "add", "viewer")
    make_idp("corp")
    with audit_insert_fails():
        with pytest.raises(DatabaseError):
            run("mapping", "set", "--claim=groups", "--value=staff", "--local-role=viewer")
        with pytest.raises(DatabaseError):
            run("role", "remove", "viewer")
        with pytest.raises(DatabaseError):
            run("idp", "disable", "corp")
    assert not RoleMapping.objects.exists()
    assert Role.objects.filter(name="viewer").exists()
    assert IdentityProvider.objects.get(slug="corp").enabled


def test_an_export_whose_audit_event_fails_releases_nothing(audit_files):
    run("role", "add", "viewer")
    path = audit_files.dir / "out.jsonl"
    with audit_insert_fails(), pytest.raises(DatabaseError):
        run("audit", "export", "--since=2000-01-01", "--until=2100-01-01", f"--output={path}")
    assert not path.exists()
