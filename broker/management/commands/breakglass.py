"""manage.py breakglass create|list|rotate|enroll|disable|enable"""

from __future__ import annotations

from django.core.management.base import CommandError

from broker.breakglass import accounts as service
from broker.management.base import EXIT_REFUSED, SubcommandCommand
from broker.models import BreakGlassAccount

ONCE = "Shown once, never stored in clear: put it in the sealed envelope / vault now."


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


class Command(SubcommandCommand):
    help = ("Manage break-glass accounts: local emergency administrators that log in only at "
            "/breakglass/ (password + security key or TOTP), outside SSO. Every change is audited.")

    def add_subcommands(self, subparsers) -> None:
        create = subparsers.add_parser(
            "create", help="Create an account: prints its password, TOTP secret and a one-time "
            "security-key enrolment link, once.")
        create.add_argument("name", help="Account (local user) name; must not exist yet.")
        create.add_argument("--email", default="", help="Contact address of the account's holder.")
        create.add_argument("--no-webauthn", action="store_true",
                            help="Do not issue a security-key enrolment link now (use `enroll` later).")
        lst = subparsers.add_parser("list", help="Accounts with last use/test, rotation due, factors.")
        lst.add_argument("--json", action="store_true", help="Machine-readable output.")
        rotate = subparsers.add_parser(
            "rotate", help="New password and TOTP secret (printed once); clears 'rotate required' "
            "and ends the account's sessions.")
        rotate.add_argument("name")
        rotate.add_argument("--reset-webauthn", action="store_true",
                            help="Also remove its security keys and print a new enrolment link.")
        enroll = subparsers.add_parser(
            "enroll", help="Print a new one-time link to register a(nother) security key.")
        enroll.add_argument("name")
        disable = subparsers.add_parser("disable", help="Refuse logins; ends the account's sessions.")
        disable.add_argument("name")
        enable = subparsers.add_parser("enable", help="Allow logins again.")
        enable.add_argument("name")

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except service.BreakGlassError as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc

    def _print_secrets(self, name: str, secrets: service.Secrets) -> None:
        w = self.stdout.write
        w(self.style.WARNING(ONCE))
        w(f"  account:        {name}")
        w(f"  password:       {secrets.password}   ({service.PASSWORD_BITS} bits; case, dashes "
          "and spaces are ignored when typed)")
        w(f"  TOTP secret:    {secrets.totp_secret}")
        w(f"  TOTP URI:       {secrets.totp_uri}")
        if secrets.enroll_url:
            w(f"  security key:   open {secrets.enroll_url} in a browser before "
              f"{secrets.enroll_expires_at:%Y-%m-%d %H:%M:%S %Z} (one-time link) and register the key")

    def handle_create(self, *, actor: str, name: str, email: str, no_webauthn: bool, **_) -> None:
        account, secrets = service.create_account(name, email=email, actor=actor,
                                                  webauthn_link=not no_webauthn)
        self.stdout.write(self.style.SUCCESS(f"Break-glass account {account.name} created (superuser)."))
        self._print_secrets(account.name, secrets)
        self.stdout.write("Log in at /breakglass/ only: password, then security key (or TOTP code).")

    def handle_rotate(self, *, actor: str, name: str, reset_webauthn: bool, **_) -> None:
        account, secrets = service.rotate(name, actor=actor, reset_keys=reset_webauthn)
        self.stdout.write(self.style.SUCCESS(f"Credentials of {account.name} rotated."))
        self._print_secrets(account.name, secrets)

    def handle_enroll(self, *, actor: str, name: str, **_) -> None:
        account = service.get_account(name)
        url, expires = service.issue_enrollment(account, actor=actor)
        self.stdout.write(f"Open {url} in a browser before {expires:%Y-%m-%d %H:%M:%S %Z} "
                          "(one-time link) and register the security key.")

    def handle_disable(self, *, actor: str, name: str, **_) -> None:
        _, changed = service.set_disabled(name, True, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"{name} disabled.") if changed
                          else f"{name} was already disabled.")

    def handle_enable(self, *, actor: str, name: str, **_) -> None:
        _, changed = service.set_disabled(name, False, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"{name} enabled.") if changed
                          else f"{name} was already enabled.")

    def handle_list(self, *, json: bool, **_) -> None:
        rows = [service.summary(a) for a in
                BreakGlassAccount.objects.select_related("user").order_by("user__username")]
        if json:
            self.print_json(rows)
            return
        if not rows:
            self.stdout.write("No break-glass accounts. Create two: manage.py breakglass create NAME")
            return
        table = []
        for r in rows:
            factors = []
            if r["factors"]["webauthn"]:
                factors.append(f"webauthn({r['factors']['webauthn']})")
            if r["factors"]["totp"]:
                factors.append("totp")
            table.append([
                r["name"], "yes" if r["enabled"] else "DISABLED", _when(r["last_used_at"]),
                _when(r["last_tested_at"]), "DUE" if r["rotate_required"] else "-",
                ", ".join(factors) or "NONE", _when(r["rotated_at"]),
            ])
        self.stdout.write(self.table(
            table, ["NAME", "ENABLED", "LAST USED", "LAST TESTED", "ROTATE", "FACTORS", "ROTATED"]))
