"""manage.py role add|list|remove"""

from __future__ import annotations

from broker.management.base import SubcommandCommand
from broker.models import Role
from broker.services import roles as service


class Command(SubcommandCommand):
    help = "Manage local roles (targets of mapping rules). Every change is audited."

    def add_subcommands(self, subparsers) -> None:
        add = subparsers.add_parser("add", help="Create a local role (and its Django group).")
        add.add_argument("name", help="Role name, e.g. portal_admin.")
        add.add_argument("--description", default="")
        add.add_argument("--staff", action="store_true", help="Holders may enter the Django admin.")
        add.add_argument("--superuser", action="store_true",
                         help="Holders get every permission (implies --staff).")
        lst = subparsers.add_parser("list", help="List roles with their mapping and holder counts.")
        lst.add_argument("--json", action="store_true", help="Machine-readable output.")
        rm = subparsers.add_parser("remove", help="Remove a role; holders lose it now.")
        rm.add_argument("name")
        rm.add_argument("--force", action="store_true",
                        help="Also remove the mapping rules that target the role.")

    def handle_add(self, *, actor: str, name: str, description: str, staff: bool,
                   superuser: bool, **_) -> None:
        role = service.add_role(name, description=description, grants_staff=staff,
                                grants_superuser=superuser, actor=actor)
        self.stdout.write(self.style.SUCCESS(f"Role {role.name} created."))

    def handle_list(self, *, json: bool, **_) -> None:
        roles = Role.objects.order_by("name")
        rows = [
            {**r.summary(), "mappings": r.mappings.count(),
             "holders": r.holders.values("user").distinct().count()}
            for r in roles
        ]
        if json:
            self.print_json(rows)
            return
        if not rows:
            self.stdout.write("No roles. Create one with: manage.py role add NAME")
            return
        self.stdout.write(self.table(
            [[r["name"], "superuser" if r["grants_superuser"] else "staff" if r["grants_staff"]
              else "-", r["mappings"], r["holders"], r["description"]] for r in rows],
            ["ROLE", "ADMIN", "MAPPINGS", "HOLDERS", "DESCRIPTION"],
        ))

    def handle_remove(self, *, actor: str, name: str, force: bool, **_) -> None:
        removed = service.remove_role(name, force=force, actor=actor)
        extra = f" and {removed} mapping(s)" if removed else ""
        self.stdout.write(self.style.SUCCESS(f"Role {name}{extra} removed."))
