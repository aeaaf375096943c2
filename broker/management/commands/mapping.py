"""manage.py mapping set|list|remove|test"""

from __future__ import annotations

import json as jsonlib

from django.core.management.base import CommandError

from broker.management.base import EXIT_REFUSED, SubcommandCommand
from broker.models import RoleMapping
from broker.services import roles as service
from broker.services.lookup import get_idp


class Command(SubcommandCommand):
    help = ("Manage the rules that map IdP claims to local roles, and simulate a login's "
            "roles. Every change is audited.")

    def add_subcommands(self, subparsers) -> None:
        st = subparsers.add_parser(
            "set", help="Map a claim value to a local role (the role must exist).",
            description="Example: mapping set --claim=groups --value=api_admins "
                        "--local-role=portal_admin",
        )
        st.add_argument("--claim", required=True, help="Canonical claim name, e.g. groups.")
        st.add_argument("--value", required=True,
                        help="Value to match (with --regex: a pattern matching the whole value).")
        st.add_argument("--local-role", required=True, dest="local_role")
        st.add_argument("--idp", default=None, help="Only for logins from this IdP (slug).")
        st.add_argument("--regex", action="store_true", help="Treat --value as a regular expression.")
        lst = subparsers.add_parser("list", help="List mapping rules.")
        lst.add_argument("--idp", default=None, help="Only rules that apply to this IdP.")
        lst.add_argument("--role", default=None)
        lst.add_argument("--json", action="store_true")
        rm = subparsers.add_parser("remove", help="Remove a mapping rule by id (see mapping list).")
        rm.add_argument("id", type=int)
        ts = subparsers.add_parser(
            "test", help="Print the roles a login with these claims would get, and why.",
            description="Example: mapping test --idp=corp --claims='{\"groups\": [\"api_admins\"]}'",
        )
        ts.add_argument("--claims", required=True, help="JSON object of claims/attributes.")
        ts.add_argument("--idp", default=None,
                        help="Apply this IdP's attribute map and rules (default: global rules only).")
        ts.add_argument("--json", action="store_true")

    def handle_set(self, *, actor: str, claim: str, value: str, local_role: str, idp: str | None,
                   regex: bool, **_) -> None:
        mapping, created = service.set_mapping(claim=claim, value=value, role=local_role,
                                               idp=idp, regex=regex, actor=actor)
        verb = "created" if created else "already exists"
        self.stdout.write(self.style.SUCCESS(f"Mapping #{mapping.pk} {verb}: {mapping}"))

    def handle_list(self, *, idp: str | None, role: str | None, json: bool, **_) -> None:
        qs = RoleMapping.objects.select_related("role", "idp").order_by("id")
        if idp:
            get_idp(idp)
            qs = qs.filter(idp__slug=idp) | qs.filter(idp__isnull=True)
        if role:
            qs = qs.filter(role__name=role)
        rows = [m.summary() for m in qs]
        if json:
            self.print_json(rows)
            return
        if not rows:
            self.stdout.write("No mapping rules.")
            return
        self.stdout.write(self.table(
            [[r["id"], r["idp"] or "*", r["claim"], r["match"], r["value"], r["role"]] for r in rows],
            ["ID", "IDP", "CLAIM", "MATCH", "VALUE", "ROLE"],
        ))

    def handle_remove(self, *, actor: str, id: int, **_) -> None:
        before = service.remove_mapping(id, actor=actor)
        self.stdout.write(self.style.SUCCESS(
            f"Mapping #{id} removed ({before['claim']}={before['value']} -> {before['role']})."
        ))

    def handle_test(self, *, claims: str, idp: str | None, json: bool, **_) -> None:
        try:
            parsed = jsonlib.loads(claims)
        except ValueError as exc:
            raise CommandError(f"--claims is not valid JSON: {exc}", returncode=EXIT_REFUSED) from exc
        if not isinstance(parsed, dict):
            raise CommandError("--claims must be a JSON object", returncode=EXIT_REFUSED)
        sim = service.simulate(parsed, idp=idp)
        if json:
            self.print_json({
                "idp": sim.idp,
                "attributes": {k: list(v) for k, v in sim.attributes.items()},
                "roles": {role: [r.describe() for r in rules] for role, rules in sim.grants.items()},
            })
            return
        if not sim.grants:
            self.stdout.write("No roles: no rule matches these claims.")
            return
        for role, rules in sim.grants.items():
            self.stdout.write(f"{role}  <- " + "; ".join(r.describe() for r in rules))
