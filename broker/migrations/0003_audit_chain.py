"""Audit log: hash chain columns, signed checkpoints, and the database-enforced append-only rule.

PostgreSQL triggers (all ``ENABLE ALWAYS``, so ``session_replication_role = replica`` does not
skip them):

* broker_auditevent: INSERT must leave seq/prev_hash/hash empty; UPDATE only seals (those three
  columns from NULL to values, every other column unchanged); DELETE and TRUNCATE refused.
* broker_auditcheckpoint: UPDATE, DELETE and TRUNCATE refused.

TRUNCATE has one opening, for throwaway test databases (Django's test flush): a superuser
session that sets ``broker.audit_allow_truncate = on`` (settings.AUDIT_ALLOW_TEST_FLUSH). A
superuser can disable triggers anyway; no other role gains anything from it.

SQLite (the embedded default): triggers refuse UPDATE (except sealing) and DELETE.
"""

from django.db import migrations, models

PG_INSTALL = r"""
CREATE OR REPLACE FUNCTION broker_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING HINT = 'Audit rows are never updated or deleted.';
END $$;

CREATE OR REPLACE FUNCTION broker_audit_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('broker.audit_allow_truncate', true) = 'on'
       AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;  -- a superuser flushing a test database
    END IF;
    RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME
        USING HINT = 'Audit rows are never updated or deleted.';
END $$;

CREATE OR REPLACE FUNCTION broker_audit_event_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.hash IS NOT NULL THEN
        RAISE EXCEPTION 'broker_auditevent: INSERT must leave seq, prev_hash and hash empty'
            USING HINT = 'The sealer assigns them after the insert commits.';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION broker_audit_event_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND (to_jsonb(NEW) - '{seq,prev_hash,hash}'::text[])
           = (to_jsonb(OLD) - '{seq,prev_hash,hash}'::text[]) THEN
        RETURN NEW;  -- sealing: the chain columns from NULL to values, nothing else
    END IF;
    RAISE EXCEPTION 'broker_auditevent is append-only: UPDATE refused'
        USING HINT = 'Only sealing (seq, prev_hash, hash from NULL) is allowed.';
END $$;

CREATE TRIGGER broker_audit_event_insert BEFORE INSERT ON broker_auditevent
    FOR EACH ROW EXECUTE FUNCTION broker_audit_event_insert();
CREATE TRIGGER broker_audit_event_update BEFORE UPDATE ON broker_auditevent
    FOR EACH ROW EXECUTE FUNCTION broker_audit_event_update();
CREATE TRIGGER broker_audit_event_delete BEFORE DELETE ON broker_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION broker_audit_refuse();
CREATE TRIGGER broker_audit_event_truncate BEFORE TRUNCATE ON broker_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION broker_audit_truncate();
CREATE TRIGGER broker_audit_checkpoint_update BEFORE UPDATE ON broker_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION broker_audit_refuse();
CREATE TRIGGER broker_audit_checkpoint_delete BEFORE DELETE ON broker_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION broker_audit_refuse();
CREATE TRIGGER broker_audit_checkpoint_truncate BEFORE TRUNCATE ON broker_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION broker_audit_truncate();

ALTER TABLE broker_auditevent ENABLE ALWAYS TRIGGER broker_audit_event_insert;
ALTER TABLE broker_auditevent ENABLE ALWAYS TRIGGER broker_audit_event_update;
ALTER TABLE broker_auditevent ENABLE ALWAYS TRIGGER broker_audit_event_delete;
ALTER TABLE broker_auditevent ENABLE ALWAYS TRIGGER broker_audit_event_truncate;
ALTER TABLE broker_auditcheckpoint ENABLE ALWAYS TRIGGER broker_audit_checkpoint_update;
ALTER TABLE broker_auditcheckpoint ENABLE ALWAYS TRIGGER broker_audit_checkpoint_delete;
ALTER TABLE broker_auditcheckpoint ENABLE ALWAYS TRIGGER broker_audit_checkpoint_truncate;
"""

PG_UNINSTALL = r"""
DROP TRIGGER IF EXISTS broker_audit_event_insert ON broker_auditevent;
DROP TRIGGER IF EXISTS broker_audit_event_update ON broker_auditevent;
DROP TRIGGER IF EXISTS broker_audit_event_delete ON broker_auditevent;
DROP TRIGGER IF EXISTS broker_audit_event_truncate ON broker_auditevent;
DROP TRIGGER IF EXISTS broker_audit_checkpoint_update ON broker_auditcheckpoint;
DROP TRIGGER IF EXISTS broker_audit_checkpoint_delete ON broker_auditcheckpoint;
DROP TRIGGER IF EXISTS broker_audit_checkpoint_truncate ON broker_auditcheckpoint;
DROP FUNCTION IF EXISTS broker_audit_event_update();
DROP FUNCTION IF EXISTS broker_audit_event_insert();
DROP FUNCTION IF EXISTS broker_audit_truncate();
DROP FUNCTION IF EXISTS broker_audit_refuse();
"""

_SAME = " AND ".join(
    f"NEW.{c} IS OLD.{c}" for c in (
        "id", "time", "action", "outcome", "actor", "source_ip", "request_id", "idp", "subject",
        "reason", "data",
    )
)
SQLITE_INSTALL = [
    """CREATE TRIGGER broker_audit_event_insert BEFORE INSERT ON broker_auditevent
       WHEN NEW.seq IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.hash IS NOT NULL
       BEGIN SELECT RAISE(ABORT, 'broker_auditevent: INSERT must leave seq, prev_hash and hash empty');
       END""",
    f"""CREATE TRIGGER broker_audit_event_update BEFORE UPDATE ON broker_auditevent
       WHEN NOT (OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
                 AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
                 AND {_SAME})
       BEGIN SELECT RAISE(ABORT, 'broker_auditevent is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER broker_audit_event_delete BEFORE DELETE ON broker_auditevent
       BEGIN SELECT RAISE(ABORT, 'broker_auditevent is append-only: DELETE refused'); END""",
    """CREATE TRIGGER broker_audit_checkpoint_update BEFORE UPDATE ON broker_auditcheckpoint
       BEGIN SELECT RAISE(ABORT, 'broker_auditcheckpoint is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER broker_audit_checkpoint_delete BEFORE DELETE ON broker_auditcheckpoint
       BEGIN SELECT RAISE(ABORT, 'broker_auditcheckpoint is append-only: DELETE refused'); END""",
]
SQLITE_TRIGGERS = ["broker_audit_event_insert", "broker_audit_event_update", "broker_audit_event_delete",
                   "broker_audit_checkpoint_update", "broker_audit_checkpoint_delete"]


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_INSTALL, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_INSTALL:
            schema_editor.execute(statement)


def remove_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_UNINSTALL, params=None)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ('broker', '0002_breakglass'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('chain', models.CharField(help_text='Hash of seq 1: names the chain.', max_length=64)),
                ('seq', models.BigIntegerField(db_index=True)),
                ('head_hash', models.CharField(max_length=64)),
                ('time', models.DateTimeField()),
                ('key_fingerprint', models.CharField(max_length=80)),
                ('signature', models.CharField(max_length=128)),
                ('reason', models.CharField(help_text='events, time, manual or export', max_length=16)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.AlterModelOptions(
            name='auditevent',
            options={'ordering': ['id'], 'permissions': [('export_auditevent', 'Can export the audit log')]},
        ),
        migrations.AddField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='prev_hash',
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='seq',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.UniqueConstraint(condition=models.Q(('seq__isnull', False)), fields=('seq',), name='broker_audit_seq_unique'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('seq__isnull', True)), fields=['id'], name='broker_audit_unsealed'),
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
