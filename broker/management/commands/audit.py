"""manage.py audit keygen|seal|checkpoint|verify|export|setup-roles"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from django.core.management.base import CommandError

from broker import audit
from broker.audit import chain, checkpoints, export, offline, setup, signing
from broker.audit.verify import verify_database
from broker.management.base import EXIT_REFUSED, SubcommandCommand

EXIT_FAILED = 1  # verification found a problem


def _when(value: str) -> dt.datetime:
    parsed = export.parse_when(value)
    if parsed is None:
        raise CommandError(f"not a date or date-time: {value!r} (e.g. 2024-05-01 or 2024-05-01T12:00:00Z)",
                           returncode=EXIT_REFUSED)
    return parsed


class Command(SubcommandCommand):
    help = ("The audit log: signing key, sealing, signed checkpoints, verification (database or an "
            "export, offline), exports for auditors, database roles. See README \"Audit log\".")

    def add_subcommands(self, subparsers) -> None:
        keygen = subparsers.add_parser("keygen", help="Create the Ed25519 checkpoint signing key (0600) and "
                                       "its public key (.pub, for auditors).")
        keygen.add_argument("--force", action="store_true",
                            help="Replace an existing key (its public key is kept to verify older "
                            "checkpoints).")
        subparsers.add_parser("seal", help="Give every committed, unsealed event its place in the chain "
                              "(normally done right after each commit).")
        subparsers.add_parser("checkpoint", help="Sign the current head now (store it, append it to the "
                              "sink, POST it to the webhook). Run it from cron to cover idle periods.")
        verify = subparsers.add_parser("verify", help="Check the chain in the database and the checkpoints "
                                       "(exit 1 on tampering), or an export file offline with --export.")
        verify.add_argument("--export", type=Path, metavar="FILE", help="Verify this export instead "
                            "(no database, no secret).")
        verify.add_argument("--public-key", type=Path, action="append", default=[], metavar="KEY",
                            help="PEM public key (required with --export; may repeat).")
        verify.add_argument("--manifest", type=Path, help="Manifest file (default: JSONL trailer or "
                            "FILE.manifest.json).")
        verify.add_argument("--sink", type=Path,
                            help="Checkpoint sink file (default: AUDIT_CHECKPOINT_SINK).")
        verify.add_argument("--no-seal", action="store_true", help="Do not seal pending events first.")
        verify.add_argument("--json", action="store_true", help="Machine-readable output.")
        exp = subparsers.add_parser("export", help="Export events for auditors, with a signed manifest.")
        exp.add_argument("--since", required=True, help="From this date/time (inclusive, UTC if no zone).")
        exp.add_argument("--until", required=True, help="Up to this date/time (exclusive).")
        exp.add_argument("--action", default="", help="Only this action, e.g. login.failed.")
        exp.add_argument("--actor", dest="actor_filter", default="", help="Only this actor.")
        exp.add_argument("--idp", default="", help="Only this IdP (slug).")
        exp.add_argument("--format", choices=export.FORMATS, default="jsonl")
        exp.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
        roles = subparsers.add_parser("setup-roles",
                                      help="Create the auditor role and (PostgreSQL) the owner/"
                                      "application database roles with their grants. Run as a superuser.")
        roles.add_argument("--owner-role", default="broker_audit_owner",
                           help="Owns the audit tables (NOLOGIN).")
        roles.add_argument("--app-role", help="The application's login role (default: the DATABASE_URL user "
                           "unless it is a superuser).")
        roles.add_argument("--dry-run", action="store_true", help="Print the SQL, change nothing.")
        roles.add_argument("--triggers-only", action="store_true", help="Only re-enable the triggers "
                           "(ENABLE ALWAYS).")
        roles.add_argument("--skip-database", action="store_true", help="Only the Django auditor role.")

    # --- subcommands -------------------------------------------------------------------------

    def handle_keygen(self, *, actor: str, force: bool, **_) -> None:
        path = checkpoints.key_file()
        try:
            new, old = signing.generate(path, force=force)
        except signing.SigningKeyError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from None
        audit.record("audit.key_generated", actor=actor, via="cli", fingerprint=new, replaced=old,
                     key_file=str(path))
        self.stdout.write(self.style.SUCCESS(f"Audit signing key {new} written to {path} (0600)."))
        self.stdout.write(f"Public key for auditors: {signing.public_path(path)}")

    def handle_seal(self, **_) -> None:
        result = chain.seal()
        critical = chain.stats()["server_critical_ms"]
        longest = f"; longest critical section {critical['max']:.2f} ms" if critical.get("n") else ""
        self.stdout.write(f"Sealed {result.sealed} event(s); head seq {result.head_seq} "
                          f"({result.head_hash[:16]}...){longest}.")

    def handle_checkpoint(self, **_) -> None:
        chain.seal()
        try:
            cp = checkpoints.create("manual")
        except signing.SigningKeyError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from None
        if cp is None:
            self.stdout.write("No sealed events yet: nothing to sign.")
            return
        published = checkpoints.publish(cp, wait=True)
        self.stdout.write(self.style.SUCCESS(f"Checkpoint #{cp.pk}: seq {cp.seq}, head {cp.head_hash}, "
                                             f"key {cp.key_fingerprint}."))
        errors = [e for e in (published.sink_error, published.webhook_error) if e]
        if errors:
            raise CommandError("checkpoint stored, but not published: " + "; ".join(errors), returncode=1)
        self.stdout.write(f"Appended to {checkpoints.sink_path()}.")

    def handle_verify(self, *, export: Path | None, public_key: list[Path], manifest: Path | None,
                      sink: Path | None, no_seal: bool, json: bool, **_) -> None:
        try:
            keys = [signing.load_public(p) for p in public_key]
        except signing.SigningKeyError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from None
        if export is not None:
            if len(keys) != 1:
                raise CommandError("--export needs exactly one --public-key", returncode=EXIT_REFUSED)
            try:
                report = offline.verify_export(export, keys[0], manifest_path=manifest)
            except offline.ExportUnreadable as exc:
                raise CommandError(str(exc), returncode=EXIT_REFUSED) from None
        else:
            known = signing.known_public_keys(checkpoints.key_file())
            known.update({signing.fingerprint(k): k for k in keys})
            report = verify_database(sink=sink, public_keys=known, seal_first=not no_seal)
        self._report(report, as_json=json)

    def _report(self, report, *, as_json: bool) -> None:
        self.stdout.write(json_dumps(report.as_dict()) if as_json else report.text())
        if not report.ok:
            first = report.first()
            raise CommandError(f"audit verification failed: {first.text()}", returncode=EXIT_FAILED)

    def handle_export(self, *, actor: str, since: str, until: str, action: str, actor_filter: str,
                      idp: str, format: str, output: Path, **_) -> None:
        filters = export.Filters(since=_when(since), until=_when(until), action=action, actor=actor_filter,
                                 idp=idp)
        try:
            prepared = export.prepare(filters, format, actor=actor, destination=f"file:{output}")
            manifest = export.write(prepared, output)
        except export.ExportError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from None
        where = f"{output}" + (f" (manifest: {offline.sidecar(output)})" if format == "csv" else "")
        first, last = manifest["first"] or {}, manifest["last"] or {}
        self.stdout.write(self.style.SUCCESS(
            f"Exported {manifest['count']} event(s), seq {first.get('seq', '-')}..{last.get('seq', '-')}, "
            f"to {where}."))
        self.stdout.write(f"Verify offline: manage.py audit verify --export {output} --public-key "
                          f"{signing.public_path(checkpoints.key_file())}")

    def handle_setup_roles(self, *, actor: str, owner_role: str, app_role: str | None, dry_run: bool,
                           triggers_only: bool, skip_database: bool, **_) -> None:
        from django.db import connection

        try:
            if triggers_only:
                for statement in setup.enable_triggers():
                    self.stdout.write(statement + ";")
                return
            if not skip_database and connection.vendor == "postgresql":
                app = app_role or connection.settings_dict.get("USER") or ""
                if not app_role:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                        if cursor.fetchone()[0]:
                            raise setup.SetupError("DATABASE_URL connects as a superuser; name the "
                                                   "application's login role with --app-role")
                statements = setup.role_statements(owner_role, app) if dry_run else \
                    setup.setup_database_roles(owner_role, app)
                for statement in statements:
                    self.stdout.write(statement + ";")
                if dry_run:
                    return
                self.stdout.write(self.style.SUCCESS(
                    f"Audit tables owned by {owner_role}; {app} may SELECT and INSERT (and seal) only."))
            elif not skip_database:
                self.stdout.write("SQLite: no database roles; the triggers refuse UPDATE and DELETE.")
            if dry_run:
                return
            setup.setup_auditor_role(actor=actor)
            self.stdout.write(self.style.SUCCESS(
                f"Role {setup.AUDITOR_ROLE}: staff, may view and export the audit log, nothing else. "
                f"Grant it with a mapping, e.g. manage.py mapping set --claim=groups --value=auditors "
                f"--local-role={setup.AUDITOR_ROLE}"))
        except setup.SetupError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from None


def json_dumps(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
