"""The database protection around the audit tables, and the auditor role.

Two database roles (``audit setup-roles``, run once as a superuser or the DBA, idempotent):

* an **owner** role (NOLOGIN) owns ``broker_auditevent`` and ``broker_auditcheckpoint``; only
  the owner can ALTER them (disable a trigger); migrations touching them run as a member of it;
* the **application** role (the one in ``DATABASE_URL``) keeps DML on the other tables and gets
  on the audit tables only SELECT and INSERT, plus ``UPDATE (seq, prev_hash, hash)`` on events
  for the sealer (the trigger still limits that to NULL -> value). No DELETE, no TRUNCATE.

The triggers themselves come from migration 0002 and are re-asserted ENABLE ALWAYS here.
The Django side: a local role ``auditor`` (staff, read-only) whose group holds exactly
``broker.view_auditevent``, ``broker.export_auditevent`` and ``broker.view_auditcheckpoint``.
"""

from __future__ import annotations

import re

from django.db import connections, transaction

from . import record

EVENTS, CHECKPOINTS = "broker_auditevent", "broker_auditcheckpoint"
PG_TRIGGERS = {
    EVENTS: ["broker_audit_event_insert", "broker_audit_event_update", "broker_audit_event_delete",
             "broker_audit_event_truncate"],
    CHECKPOINTS: ["broker_audit_checkpoint_update", "broker_audit_checkpoint_delete",
                  "broker_audit_checkpoint_truncate"],
}
SQLITE_TRIGGERS = ["broker_audit_event_insert", "broker_audit_event_update", "broker_audit_event_delete",
                   "broker_audit_checkpoint_update", "broker_audit_checkpoint_delete"]
AUDITOR_ROLE = "auditor"
AUDITOR_PERMISSIONS = ("view_auditevent", "export_auditevent", "view_auditcheckpoint")
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SetupError(Exception):
    pass


def trigger_problems(using: str = "default") -> list[str]:
    """What is missing or switched off in the database-side protection."""
    connection = connections[using]
    problems = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relname = ANY(%s) "
                "AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
                [list(PG_TRIGGERS)])
            state = {(table, name): enabled for table, name, enabled in cursor.fetchall()}
            for table, names in PG_TRIGGERS.items():
                for name in names:
                    enabled = state.get((table, name))
                    if enabled is None:
                        problems.append(f"trigger {name} on {table} is missing")
                    elif enabled != "A":
                        what = {"D": "disabled", "O": "ENABLE (origin only)",
                                "R": "ENABLE REPLICA"}.get(enabled, enabled)
                        problems.append(f"trigger {name} on {table} is {what}, not ENABLE ALWAYS "
                                        "(fix: manage.py audit setup-roles --triggers-only)")
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            present = {row[0] for row in cursor.fetchall()}
            problems += [f"trigger {name} is missing" for name in SQLITE_TRIGGERS if name not in present]
    return problems


def enable_statements() -> list[str]:
    return [f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}" for table, names in PG_TRIGGERS.items()
            for name in names]


def _quote(name: str) -> str:
    if not _ROLE_NAME.match(name):
        raise SetupError(f"invalid role name {name!r} (lower-case letters, digits, _; max 63)")
    return f'"{name}"'


def role_statements(owner: str, app: str) -> list[str]:
    """The SQL ``setup-roles`` runs (idempotent), in order."""
    o, a = _quote(owner), _quote(app)
    if owner == app:
        raise SetupError("the owner role and the application role must differ")
    create = "DO $$BEGIN CREATE ROLE {} {}; EXCEPTION WHEN duplicate_object THEN NULL; END$$"
    both = f"{EVENTS}, {CHECKPOINTS}"
    return [
        create.format(o, "NOLOGIN"),
        create.format(a, "LOGIN"),
        f"GRANT USAGE ON SCHEMA public TO {a}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {a}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {a}",
        f"ALTER TABLE {EVENTS} OWNER TO {o}",
        f"ALTER TABLE {CHECKPOINTS} OWNER TO {o}",
        f"REVOKE ALL ON {both} FROM PUBLIC",
        f"REVOKE ALL ON {both} FROM {a}",
        f"GRANT SELECT, INSERT ON {both} TO {a}",
        f"GRANT UPDATE (seq, prev_hash, hash) ON {EVENTS} TO {a}",
        *enable_statements(),
    ]


def setup_database_roles(owner: str, app: str, *, using: str = "default") -> list[str]:
    """Create the roles and apply the grants; refuses an app role that could bypass them."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        raise SetupError("database roles need PostgreSQL (SQLite has only the triggers)")
    statements = role_statements(owner, app)
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            raise SetupError("run setup-roles as a superuser (or a role with CREATEROLE that owns the "
                             "tables)")
        for statement in statements[:2]:
            cursor.execute(statement)
        cursor.execute("SELECT rolsuper, rolbypassrls, pg_has_role(%s, %s, 'MEMBER') FROM pg_roles "
                       "WHERE rolname = %s", [app, owner, app])
        superuser, bypass, member = cursor.fetchone()
        if superuser or bypass or member:
            raise SetupError(f"the application role {app!r} is a superuser or a member of {owner!r}: it "
                             "would bypass the privileges; use a plain login role")
        for statement in statements[2:]:
            cursor.execute(statement)
        record("audit.roles_set_up", owner_role=owner, app_role=app, via="cli")
    return statements


def enable_triggers(*, using: str = "default") -> list[str]:
    connection = connections[using]
    if connection.vendor != "postgresql":
        return []
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for statement in enable_statements():
            cursor.execute(statement)
    return enable_statements()


def setup_auditor_role(*, actor: str | None = None):
    """The local ``auditor`` role: staff (enters the admin), sees and exports the audit log only."""
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Permission

    from broker.models import Role
    from broker.services import roles as roles_service

    with transaction.atomic():
        role = Role.objects.select_for_update().filter(name=AUDITOR_ROLE).first()
        if role is None:
            role = roles_service.add_role(AUDITOR_ROLE,
                                          description="Reads and exports the audit log; changes "
                                          "nothing", grants_staff=True, actor=actor, via="cli")
        elif role.grants_superuser:
            raise SetupError(f"role {AUDITOR_ROLE!r} exists and grants superuser; an auditor must be "
                             "read-only")
        perms = Permission.objects.filter(content_type__app_label="broker", codename__in=AUDITOR_PERMISSIONS)
        if perms.count() != len(AUDITOR_PERMISSIONS):
            create_permissions(apps.get_app_config("broker"), verbosity=0)
        before = sorted(role.group.permissions.values_list("codename", flat=True))
        role.group.permissions.set(perms)
        after = sorted(AUDITOR_PERMISSIONS)
        if before != after:
            record("role.permissions_set", actor=actor, via="cli", role=AUDITOR_ROLE, before=before,
                   after=after)
    return role
