"""manage.py idp list|show|enable|disable|remove  (add-saml / add-oidc come with the adapters)"""

from __future__ import annotations

from broker.management.base import SubcommandCommand
from broker.models import IdentityProvider
from broker.services import idps as service


class Command(SubcommandCommand):
    help = "Manage identity providers. Every change is audited."

    def add_subcommands(self, subparsers) -> None:
        lst = subparsers.add_parser("list", help="List IdPs with status.")
        lst.add_argument("--json", action="store_true")
        show = subparsers.add_parser("show", help="Show one IdP's configuration (secrets redacted).")
        show.add_argument("slug")
        for name, text in (("enable", "Allow logins through the IdP."),
                           ("disable", "Refuse logins through the IdP (nothing is deleted).")):
            p = subparsers.add_parser(name, help=text)
            p.add_argument("slug")
        rm = subparsers.add_parser("remove", help="Remove an IdP and its IdP-specific mappings.")
        rm.add_argument("slug")
        rm.add_argument("--force", action="store_true",
                        help="Also unlink its federated identities (local users stay).")

    def handle_list(self, *, json: bool, **_) -> None:
        idps = IdentityProvider.objects.order_by("slug")
        rows = [
            {**i.summary(), "identities": i.identities.count(), "last_login_at": i.last_login_at}
            for i in idps
        ]
        if json:
            self.print_json(rows)
            return
        if not rows:
            self.stdout.write("No identity providers configured.")
            return
        self.stdout.write(self.table(
            [[r["slug"], r["protocol"], "yes" if r["enabled"] else "no",
              "LEGACY" if r["legacy_crypto"] else "-", r["identities"],
              r["last_login_at"] or "never", r["name"]] for r in rows],
            ["SLUG", "PROTOCOL", "ENABLED", "CRYPTO", "IDENTITIES", "LAST LOGIN", "NAME"],
        ))

    def handle_show(self, *, slug: str, **_) -> None:
        idp = service.get_idp(slug)
        self.print_json({**idp.summary(), "identities": idp.identities.count(),
                         "last_login_at": idp.last_login_at, "created_at": idp.created_at})

    def handle_enable(self, *, actor: str, slug: str, **_) -> None:
        changed = service.set_enabled(slug, True, actor=actor)
        state = "enabled" if changed else "was already enabled"
        self.stdout.write(self.style.SUCCESS(f"IdP {slug} {state}."))

    def handle_disable(self, *, actor: str, slug: str, **_) -> None:
        changed = service.set_enabled(slug, False, actor=actor)
        state = "disabled" if changed else "was already disabled"
        self.stdout.write(self.style.SUCCESS(f"IdP {slug} {state}."))

    def handle_remove(self, *, actor: str, slug: str, force: bool, **_) -> None:
        service.remove(slug, force=force, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"IdP {slug} removed."))
