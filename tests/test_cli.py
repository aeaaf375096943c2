"""The role / mapping / idp management commands: behaviour, refusals, exit codes, audit trail.

Most tests drive the commands through ``call_command``; a few run ``manage.py`` in a real
subprocess to prove the process exit code and the exact stderr text operators see.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from broker import rbac
from broker.models import AuditEvent, FederatedIdentity, IdentityProvider, Role, RoleMapping, UserRole
from tests.servers import test_database_url

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent
MS_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
IS_MEMBER_OF_OID = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1"


# --- helpers --------------------------------------------------------------------------------


def run(*args: str) -> str:
    """Run a management command in-process; return its stdout."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


def refused(*args: str) -> str:
    """Run a command that must be refused with exit code 2; return the error message."""
    with pytest.raises(CommandError) as info:
        run(*args)
    assert info.value.returncode == 2, f"expected exit code 2, got {info.value.returncode}"
    return str(info.value)


def last_event_id() -> int:
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    return last or 0


def events_after(event_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(id__gt=event_id).order_by("id"))


def only_event(since: int, action: str) -> AuditEvent:
    new = events_after(since)
    assert [e.action for e in new] == [action], [e.action for e in new]
    event = new[0]
    assert event.actor.startswith("cli:"), event.actor
    assert event.outcome == "success"
    assert event.data.get("via") == "cli"
    return event


def snapshot() -> dict[str, int]:
    return {
        "roles": Role.objects.count(),
        "groups": Group.objects.count(),
        "mappings": RoleMapping.objects.count(),
        "idps": IdentityProvider.objects.count(),
        "identities": FederatedIdentity.objects.count(),
        "user_roles": UserRole.objects.count(),
        "events": AuditEvent.objects.count(),
    }


def grant(user, role: Role, source: str = UserRole.Source.MANUAL) -> None:
    UserRole.objects.create(user=user, role=role, source=source)
    rbac.apply_role_effects(user)


@pytest.fixture
def portal_admin(make_role) -> Role:
    return make_role("portal_admin", grants_staff=True)


@pytest.fixture
def user_factory(db):
    """A federated user (roles decide admin flags only for federated users)."""

    def _make(username: str):
        user = get_user_model().objects.create_user(username=username)
        idp, _ = IdentityProvider.objects.get_or_create(
            slug="fixture-idp", defaults={"name": "Fixture", "protocol": "saml"})
        FederatedIdentity.objects.create(idp=idp, subject=username, user=user)
        return user

    return _make


# --- role -----------------------------------------------------------------------------------


def test_role_add_creates_role_group_and_audit_event():
    since = last_event_id()
    out = run("role", "add", "portal_admin", "--description=Portal admins", "--staff")

    assert "portal_admin" in out
    role = Role.objects.get(name="portal_admin")
    assert role.grants_staff is True and role.grants_superuser is False
    assert role.group.name == "role:portal_admin"
    assert Group.objects.filter(pk=role.group_id).exists()
    event = only_event(since, "role.created")
    assert event.data["after"] == {
        "name": "portal_admin", "description": "Portal admins",
        "grants_staff": True, "grants_superuser": False,
    }


def test_role_add_superuser_implies_staff():
    run("role", "add", "root", "--superuser")
    role = Role.objects.get(name="root")
    assert (role.grants_staff, role.grants_superuser) == (True, True)


@pytest.mark.parametrize("name", ["_leading_underscore", "has space", "x" * 65, "semi;colon"])
def test_role_add_invalid_name_refused(name):
    before = snapshot()
    refused("role", "add", name)
    assert snapshot() == before


def test_role_add_duplicate_refused(portal_admin):
    before = snapshot()
    message = refused("role", "add", "portal_admin")
    assert "already exists" in message
    assert snapshot() == before


def test_role_list_text_and_json(make_role, make_idp, user_factory):
    admin_role = make_role("portal_admin", grants_staff=True, description="Admins")
    make_role("viewer")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run("mapping", "set", "--claim=groups", "--value=ops", "--local-role=portal_admin")
    alice = user_factory("alice")
    # Held twice (federation + manual) by one user: counted as one holder.
    grant(alice, admin_role, UserRole.Source.FEDERATION)
    grant(alice, admin_role, UserRole.Source.MANUAL)

    rows = {r["name"]: r for r in json.loads(run("role", "list", "--json"))}
    assert set(rows) == {"portal_admin", "viewer"}
    assert (rows["portal_admin"]["mappings"], rows["portal_admin"]["holders"]) == (2, 1)
    assert rows["portal_admin"]["grants_staff"] is True
    assert (rows["viewer"]["mappings"], rows["viewer"]["holders"]) == (0, 0)

    lines = run("role", "list").splitlines()
    assert lines[0].split() == ["ROLE", "ADMIN", "MAPPINGS", "HOLDERS", "DESCRIPTION"]
    assert lines[2].split() == ["portal_admin", "staff", "2", "1", "Admins"]
    assert lines[3].split() == ["viewer", "-", "0", "0"]


def test_role_list_empty():
    assert "No roles" in run("role", "list")
    assert json.loads(run("role", "list", "--json")) == []


def test_role_remove_missing_role_refused():
    assert refused("role", "remove", "ghost") == "Role Not Found: ghost"


def test_role_remove_refused_while_mappings_target_it(portal_admin, user_factory):
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    alice = user_factory("alice")
    grant(alice, portal_admin)
    before = snapshot()

    message = refused("role", "remove", "portal_admin")

    assert "1 mapping" in message and "--force" in message
    assert snapshot() == before
    alice.refresh_from_db()
    assert alice.is_staff is True


def test_role_remove_without_mappings_needs_no_force(make_role):
    role = make_role("viewer", description="read only")
    group_id = role.group_id
    since = last_event_id()

    run("role", "remove", "viewer")

    assert not Role.objects.filter(name="viewer").exists()
    assert not Group.objects.filter(pk=group_id).exists()
    event = only_event(since, "role.removed")
    assert event.data["before"]["name"] == "viewer"
    assert event.data["before"]["description"] == "read only"
    assert event.data["mappings_removed"] == []


def test_role_remove_force_removes_mappings_and_revokes_holders(make_role, make_idp, user_factory):
    admin_role = make_role("portal_admin", grants_staff=True)
    ops_role = make_role("ops", grants_staff=True)
    viewer = make_role("viewer")
    make_idp("corp")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run("mapping", "set", "--claim=groups", "--value=admins", "--local-role=portal_admin", "--idp=corp")
    run("mapping", "set", "--claim=groups", "--value=staff", "--local-role=viewer")
    mapping_ids = set(RoleMapping.objects.filter(role=admin_role).values_list("id", flat=True))
    viewer_mapping = RoleMapping.objects.get(role=viewer)
    alice = user_factory("alice")  # only portal_admin: loses staff
    bob = user_factory("bob")  # portal_admin and ops: stays staff through ops
    grant(alice, admin_role, UserRole.Source.FEDERATION)
    grant(alice, viewer)
    grant(bob, admin_role)
    grant(bob, ops_role)
    alice.refresh_from_db()
    assert alice.is_staff is True
    group_id = admin_role.group_id
    since = last_event_id()

    out = run("role", "remove", "portal_admin", "--force")

    assert "2 mapping(s)" in out
    assert not Role.objects.filter(name="portal_admin").exists()
    assert not RoleMapping.objects.filter(id__in=mapping_ids).exists()
    assert RoleMapping.objects.filter(pk=viewer_mapping.pk).exists()
    assert not Group.objects.filter(pk=group_id).exists()
    assert not UserRole.objects.filter(role_id=admin_role.pk).exists()
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.is_staff is False
    assert set(alice.groups.values_list("name", flat=True)) == {"role:viewer"}
    assert bob.is_staff is True
    assert set(bob.groups.values_list("name", flat=True)) == {"role:ops"}

    event = only_event(since, "role.removed")
    assert event.data["before"]["name"] == "portal_admin"
    assert event.data["before"]["grants_staff"] is True
    assert {m["id"] for m in event.data["mappings_removed"]} == mapping_ids
    assert {m["idp"] for m in event.data["mappings_removed"]} == {None, "corp"}
    assert set(event.data["holders"]) == {"alice", "bob"}


# --- mapping set ----------------------------------------------------------------------------


def test_mapping_set_to_missing_role_is_refused_and_changes_nothing(make_role, make_idp):
    make_role("viewer")
    make_idp("corp")
    before = snapshot()

    message = refused(
        "mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin"
    )

    assert message == "Role Not Found: portal_admin"
    assert snapshot() == before
    assert RoleMapping.objects.count() == 0


def test_mapping_set_creates_mapping_and_one_audit_event(portal_admin):
    since = last_event_id()

    out = run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")

    mapping = RoleMapping.objects.get()
    assert (mapping.idp_id, mapping.claim, mapping.value, mapping.match, mapping.role_id) == (
        None, "groups", "api_admins", "exact", portal_admin.pk
    )
    assert f"Mapping #{mapping.pk} created" in out
    event = only_event(since, "mapping.created")
    assert event.data["after"] == {
        "id": mapping.pk, "idp": None, "claim": "groups", "value": "api_admins",
        "match": "exact", "role": "portal_admin",
    }
    assert event.data.get("before") is None


def test_mapping_set_is_idempotent(portal_admin):
    args = ("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run(*args)
    since = last_event_id()

    out = run(*args)

    assert RoleMapping.objects.count() == 1
    assert "already exists" in out
    assert events_after(since) == []


def test_mapping_set_scoped_to_idp(portal_admin, make_idp):
    corp = make_idp("corp")
    since = last_event_id()

    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin",
        "--idp=corp")

    mapping = RoleMapping.objects.get()
    assert mapping.idp_id == corp.pk
    assert only_event(since, "mapping.created").data["after"]["idp"] == "corp"
    # The same rule for every IdP is a different rule.
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    assert RoleMapping.objects.count() == 2


def test_mapping_set_unknown_idp_refused(portal_admin, make_idp):
    make_idp("corp")
    before = snapshot()

    message = refused("mapping", "set", "--claim=groups", "--value=api_admins",
                      "--local-role=portal_admin", "--idp=nope")

    assert message == "IdP Not Found: nope"
    assert snapshot() == before


def test_mapping_set_invalid_regex_refused(portal_admin):
    before = snapshot()

    message = refused("mapping", "set", "--claim=groups", "--value=api_(admins",
                      "--local-role=portal_admin", "--regex")

    assert "invalid regular expression" in message
    assert snapshot() == before


def test_mapping_set_regex_is_stored_as_regex_and_full_matches(portal_admin):
    run("mapping", "set", "--claim=groups", "--value=api_.*", "--local-role=portal_admin", "--regex")
    assert RoleMapping.objects.get().match == "regex"

    granted = json.loads(run("mapping", "test", "--claims", '{"groups": ["api_admins"]}', "--json"))
    assert list(granted["roles"]) == ["portal_admin"]
    partial = json.loads(run("mapping", "test", "--claims", '{"groups": ["x_api_admins"]}', "--json"))
    assert partial["roles"] == {}


@pytest.mark.parametrize("claim, value", [("   ", "api_admins"), ("groups", "x" * 501)])
def test_mapping_set_rejects_empty_claim_and_overlong_value(portal_admin, claim, value):
    before = snapshot()
    refused("mapping", "set", f"--claim={claim}", f"--value={value}", "--local-role=portal_admin")
    assert snapshot() == before


# --- mapping list / remove ------------------------------------------------------------------


def test_mapping_list_filters(make_role, make_idp):
    make_role("portal_admin")
    make_role("viewer")
    make_idp("corp")
    make_idp("partner")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run("mapping", "set", "--claim=groups", "--value=corp_admins", "--local-role=portal_admin",
        "--idp=corp")
    run("mapping", "set", "--claim=affiliation", "--value=staff", "--local-role=viewer",
        "--idp=partner")

    everything = json.loads(run("mapping", "list", "--json"))
    assert {(r["idp"], r["value"], r["role"]) for r in everything} == {
        (None, "api_admins", "portal_admin"),
        ("corp", "corp_admins", "portal_admin"),
        ("partner", "staff", "viewer"),
    }
    corp = json.loads(run("mapping", "list", "--idp=corp", "--json"))
    assert {r["value"] for r in corp} == {"api_admins", "corp_admins"}
    viewer = json.loads(run("mapping", "list", "--role=viewer", "--json"))
    assert [r["value"] for r in viewer] == ["staff"]

    lines = run("mapping", "list").splitlines()
    assert lines[0].split() == ["ID", "IDP", "CLAIM", "MATCH", "VALUE", "ROLE"]
    assert len(lines) == 2 + 3
    assert any(line.split()[1:] == ["*", "groups", "exact", "api_admins", "portal_admin"]
               for line in lines[2:])


def test_mapping_list_empty():
    assert "No mapping rules" in run("mapping", "list")


def test_mapping_remove_deletes_and_audits_before_value(portal_admin, make_idp):
    make_idp("corp")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin",
        "--idp=corp")
    mapping = RoleMapping.objects.get()
    since = last_event_id()

    out = run("mapping", "remove", str(mapping.pk))

    assert "removed" in out
    assert not RoleMapping.objects.exists()
    event = only_event(since, "mapping.removed")
    assert event.data["before"] == {
        "id": mapping.pk, "idp": "corp", "claim": "groups", "value": "api_admins",
        "match": "exact", "role": "portal_admin",
    }
    assert event.data.get("after") is None
    assert Role.objects.filter(name="portal_admin").exists()


def test_mapping_remove_unknown_id_refused(portal_admin):
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    before = snapshot()
    missing = RoleMapping.objects.get().pk + 1000
    assert f"no mapping with id {missing}" in refused("mapping", "remove", str(missing))
    assert snapshot() == before


# --- mapping test ---------------------------------------------------------------------------


def test_mapping_test_prints_role_and_granting_rule(portal_admin, make_role):
    make_role("viewer")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run("mapping", "set", "--claim=groups", "--value=everyone", "--local-role=viewer")
    rule = RoleMapping.objects.get(value="api_admins")
    since = last_event_id()

    out = run("mapping", "test", "--claims", '{"groups": ["api_admins", "other"]}')

    assert out.strip().splitlines() == [f"portal_admin  <- #{rule.pk} [*] groups = 'api_admins'"]
    assert events_after(since) == []  # a simulation changes nothing


def test_mapping_test_no_match():
    out = run("mapping", "test", "--claims", '{"groups": ["nobody"]}')
    assert "No roles" in out


@pytest.mark.parametrize("claim_name", [MS_GROUPS, IS_MEMBER_OF_OID, "isMemberOf", "memberOf"])
def test_mapping_test_folds_builtin_attribute_names(portal_admin, claim_name):
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    rule = RoleMapping.objects.get()

    out = run("mapping", "test", "--claims", json.dumps({claim_name: ["api_admins"]}))
    assert out.strip() == f"portal_admin  <- #{rule.pk} [*] groups = 'api_admins'"

    result = json.loads(run("mapping", "test", "--claims", json.dumps({claim_name: "api_admins"}),
                            "--json"))
    assert result["attributes"] == {"groups": ["api_admins"]}


def test_mapping_test_with_idp_applies_its_attribute_map_and_rules(portal_admin, make_role, make_idp):
    make_role("corp_ops")
    make_idp("corp", attribute_map={"memberOf": "groups", "corpTeams": "groups"})
    make_idp("partner")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run("mapping", "set", "--claim=groups", "--value=ops", "--local-role=corp_ops", "--idp=corp")
    global_rule = RoleMapping.objects.get(value="api_admins")
    corp_rule = RoleMapping.objects.get(value="ops")
    claims = json.dumps({"corpTeams": ["api_admins"], "memberOf": ["ops"]})

    out = run("mapping", "test", "--idp=corp", "--claims", claims)
    assert out.strip().splitlines() == [
        f"corp_ops  <- #{corp_rule.pk} [corp] groups = 'ops'",
        f"portal_admin  <- #{global_rule.pk} [*] groups = 'api_admins'",
    ]

    as_json = json.loads(run("mapping", "test", "--idp=corp", "--claims", claims, "--json"))
    assert as_json["idp"] == "corp"
    assert as_json["attributes"] == {"groups": ["api_admins", "ops"]}
    assert as_json["roles"] == {
        "corp_ops": [f"#{corp_rule.pk} [corp] groups = 'ops'"],
        "portal_admin": [f"#{global_rule.pk} [*] groups = 'api_admins'"],
    }

    # Another IdP: neither corp's attribute map nor corp's rule applies.
    partner = json.loads(run("mapping", "test", "--idp=partner", "--claims", claims, "--json"))
    assert partner["attributes"]["corpTeams"] == ["api_admins"]
    assert list(partner["roles"]) == []
    # No --idp: global rules only, built-in names only.
    global_only = json.loads(run("mapping", "test", "--claims", claims, "--json"))
    assert global_only["idp"] is None
    assert list(global_only["roles"]) == []


def test_mapping_test_idp_attribute_map_overrides_builtin_table(portal_admin, make_idp):
    make_idp("ad", attribute_map={"memberOf": "ad_groups"})
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")

    result = json.loads(run("mapping", "test", "--idp=ad", "--claims",
                            '{"memberOf": ["api_admins"]}', "--json"))

    assert result["attributes"] == {"ad_groups": ["api_admins"]}
    assert result["roles"] == {}


@pytest.mark.parametrize("claims, expected", [
    ("{not json", "not valid JSON"),
    ('["groups"]', "must be a JSON object"),
])
def test_mapping_test_bad_claims_refused(claims, expected):
    assert expected in refused("mapping", "test", "--claims", claims)


def test_mapping_test_unknown_idp_refused():
    assert refused("mapping", "test", "--idp=nope", "--claims", "{}") == "IdP Not Found: nope"


# --- idp ------------------------------------------------------------------------------------


@pytest.fixture
def corp(make_idp) -> IdentityProvider:
    return make_idp(
        "corp", name="Corp ADFS", protocol="saml", legacy_crypto=True,
        config={"client_secret": "s3cr3t-value", "client_secret_env": "MY_VAR",
                "nested": {"password": "hunter2-pw"}, "metadata_url": "https://corp.example/md"},
    )


def link_identity(idp: IdentityProvider, username: str = "alice") -> FederatedIdentity:
    user = get_user_model().objects.create_user(username=username)
    return FederatedIdentity.objects.create(idp=idp, subject=f"{username}-subject", user=user)


def test_idp_list_text_and_json(corp, make_idp):
    make_idp("modern", name="Modern OP", protocol="oidc", enabled=False)
    link_identity(corp)

    lines = run("idp", "list").splitlines()
    assert lines[0].split()[:5] == ["SLUG", "PROTOCOL", "ENABLED", "CRYPTO", "IDENTITIES"]
    assert lines[2].split()[:6] == ["corp", "saml", "yes", "LEGACY", "1", "never"]
    assert lines[3].split()[:6] == ["modern", "oidc", "no", "-", "0", "never"]

    rows = json.loads(run("idp", "list", "--json"))
    assert [(r["slug"], r["enabled"], r["identities"]) for r in rows] == [
        ("corp", True, 1), ("modern", False, 0)
    ]
    assert "s3cr3t-value" not in json.dumps(rows)


def test_idp_list_empty():
    assert "No identity providers" in run("idp", "list")


def test_idp_show_never_prints_secret_values(corp):
    link_identity(corp)
    out = run("idp", "show", "corp")

    assert "s3cr3t-value" not in out
    assert "hunter2-pw" not in out
    shown = json.loads(out)
    assert shown["slug"] == "corp"
    assert shown["identities"] == 1
    assert shown["config"]["client_secret"] == "[redacted]"
    assert shown["config"]["nested"]["password"] == "[redacted]"
    assert shown["config"]["client_secret_env"] == "MY_VAR"
    assert shown["config"]["metadata_url"] == "https://corp.example/md"
    # Showing changes nothing stored.
    corp.refresh_from_db()
    assert corp.config["client_secret"] == "s3cr3t-value"


def test_idp_show_unknown_refused():
    assert refused("idp", "show", "nope") == "IdP Not Found: nope"


def test_idp_disable_and_enable_are_audited_with_before_after(corp):
    since = last_event_id()

    out = run("idp", "disable", "corp")

    assert "disabled" in out
    corp.refresh_from_db()
    assert corp.enabled is False
    event = only_event(since, "idp.disabled")
    assert event.idp == "corp"
    assert event.data["before"]["enabled"] is True
    assert event.data["after"]["enabled"] is False
    assert "s3cr3t-value" not in json.dumps(event.data)
    assert event.data["after"]["config"]["client_secret"] == "[redacted]"

    # Already disabled: nothing changes, nothing is recorded.
    since = last_event_id()
    assert "already disabled" in run("idp", "disable", "corp")
    assert events_after(since) == []

    run("idp", "enable", "corp")
    corp.refresh_from_db()
    assert corp.enabled is True
    event = only_event(since, "idp.enabled")
    assert (event.data["before"]["enabled"], event.data["after"]["enabled"]) == (False, True)

    since = last_event_id()
    assert "already enabled" in run("idp", "enable", "corp")
    assert events_after(since) == []


@pytest.mark.parametrize("sub", ["enable", "disable", "remove"])
def test_idp_change_unknown_slug_refused(sub, make_idp):
    make_idp("corp")
    before = snapshot()
    assert refused("idp", sub, "nope") == "IdP Not Found: nope"
    assert snapshot() == before


def test_idp_remove_refused_while_identities_linked(corp):
    identity = link_identity(corp)
    before = snapshot()

    message = refused("idp", "remove", "corp")

    assert "1 federated identity is linked" in message and "--force" in message
    assert snapshot() == before
    assert FederatedIdentity.objects.filter(pk=identity.pk).exists()


def test_idp_remove_force_unlinks_identities_and_removes_its_mappings(corp, make_idp, portal_admin):
    make_idp("other")
    identity = link_identity(corp)
    link_identity(corp, "bob")
    run("mapping", "set", "--claim=groups", "--value=corp_admins", "--local-role=portal_admin",
        "--idp=corp")
    run("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")
    run("mapping", "set", "--claim=groups", "--value=other_admins", "--local-role=portal_admin",
        "--idp=other")
    corp_rule = RoleMapping.objects.get(idp=corp)
    since = last_event_id()

    out = run("idp", "remove", "corp", "--force")

    assert "removed" in out
    assert not IdentityProvider.objects.filter(slug="corp").exists()
    assert not FederatedIdentity.objects.exists()
    assert get_user_model().objects.filter(pk=identity.user_id).exists()  # local user stays
    assert set(RoleMapping.objects.values_list("value", flat=True)) == {"api_admins", "other_admins"}
    event = only_event(since, "idp.removed")
    assert event.idp == "corp"
    assert event.data["before"]["slug"] == "corp"
    assert event.data["before"]["legacy_crypto"] is True
    assert event.data["identities_unlinked"] == 2
    assert [m["id"] for m in event.data["mappings_removed"]] == [corp_rule.pk]
    assert "s3cr3t-value" not in json.dumps(event.data)


def test_idp_remove_without_identities_needs_no_force(make_idp):
    make_idp("unused")
    since = last_event_id()
    run("idp", "remove", "unused")
    assert not IdentityProvider.objects.filter(slug="unused").exists()
    event = only_event(since, "idp.removed")
    assert event.data["identities_unlinked"] == 0


# --- --help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (("role",), ["add", "list", "remove"]),
    (("role", "add"), ["--description", "--staff", "--superuser"]),
    (("role", "list"), ["--json"]),
    (("role", "remove"), ["--force"]),
    (("mapping",), ["set", "list", "remove", "test"]),
    (("mapping", "set"), ["--claim", "--value", "--local-role", "--idp", "--regex"]),
    (("mapping", "list"), ["--idp", "--role", "--json"]),
    (("mapping", "remove"), ["id"]),
    (("mapping", "test"), ["--claims", "--idp", "--json"]),
    (("idp",), ["list", "show", "enable", "disable", "remove"]),
    (("idp", "list"), ["--json"]),
    (("idp", "show"), ["slug"]),
    (("idp", "enable"), ["slug"]),
    (("idp", "disable"), ["slug"]),
    (("idp", "remove"), ["--force"]),
])
def test_help(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        call_command(*argv, "--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    assert " ".join(argv) in out.splitlines()[0]
    for word in expected:
        assert word in out


# --- real process: exit codes and stderr ----------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    """The tests' environment, pointed at the test database the fixtures write to."""
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's default, as an operator runs it
    return env


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    python = REPO / ".venv" / "bin" / "python"
    return subprocess.run(
        [str(python if python.exists() else sys.executable), "manage.py", *args],
        cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_process_mapping_set_missing_role_exits_2(make_role, make_idp):
    make_role("viewer")
    make_idp("corp")
    before = snapshot()

    proc = manage("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")

    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == "CommandError: Role Not Found: portal_admin"
    assert snapshot() == before
    assert not RoleMapping.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_process_mapping_set_invalid_regex_exits_2(make_role):
    make_role("portal_admin")
    before = snapshot()

    proc = manage("mapping", "set", "--claim=groups", "--value=(unclosed", "--local-role=portal_admin",
                  "--regex")

    assert proc.returncode == 2, proc.stderr
    assert "invalid regular expression" in proc.stderr.strip().splitlines()[-1]
    assert snapshot() == before


@pytest.mark.django_db(transaction=True)
def test_process_mapping_set_success_exits_0_and_is_audited(make_role):
    make_role("portal_admin")
    since = last_event_id()

    proc = manage("mapping", "set", "--claim=groups", "--value=api_admins", "--local-role=portal_admin")

    assert proc.returncode == 0, proc.stderr
    mapping = RoleMapping.objects.get()
    assert f"Mapping #{mapping.pk} created" in proc.stdout
    event = only_event(since, "mapping.created")
    assert event.data["after"]["id"] == mapping.pk
