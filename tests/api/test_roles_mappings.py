"""Roles and mapping rules through the Admin API (CRUD, conflicts, audit) and the simulator."""

from __future__ import annotations

import pytest

from broker.models import AuditEvent, Role, RoleMapping
from broker.services import roles as role_service
from tests.api.conftest import API, call

pytestmark = pytest.mark.django_db


def _events(action: str):
    return AuditEvent.objects.filter(action=action)


# --- roles ---------------------------------------------------------------------------------------


def test_role_crud(api):
    client = api.admin()
    created = call(client, "POST", f"{API}/roles/", {"name": "api_reader", "description": "Reads"})
    assert created.status_code == 201, created.content
    assert created.json() == {**created.json(), "name": "api_reader", "description": "Reads",
                              "grants_staff": False, "grants_superuser": False, "mappings": 0,
                              "holders": 0}
    role = Role.objects.get(name="api_reader")
    assert role.group.name == "role:api_reader"
    event = _events("role.created").get(data__after__name="api_reader")
    assert event.actor == "op:admin-1" and event.data["via"] == "api"

    names = [r["name"] for r in client.get(f"{API}/roles/").json()["results"]]
    assert names == sorted(names) and "api_reader" in names
    assert client.get(f"{API}/roles/api_reader/").json()["description"] == "Reads"

    patched = call(client, "PATCH", f"{API}/roles/api_reader/", {"grants_superuser": True})
    assert patched.status_code == 200, patched.content
    assert patched.json()["grants_superuser"] is True and patched.json()["grants_staff"] is True
    assert patched.json()["description"] == "Reads"  # untouched
    assert _events("role.changed").get().data["after"]["grants_superuser"] is True

    assert call(client, "DELETE", f"{API}/roles/api_reader/").status_code == 204
    assert not Role.objects.filter(name="api_reader").exists()
    assert _events("role.removed").get().data["before"]["name"] == "api_reader"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"name": "portal_admin"}, 409, "already_exists"),
    ({"name": "has space"}, 400, "invalid"),
    ({"name": ""}, 400, "invalid"),
    ({"name": "x" * 65}, 400, "invalid"),
    ({"name": "ok", "grants_staff": "maybe"}, 400, "invalid"),
    ({"name": "ok", "group": 1}, 400, "invalid"),
    ([{"name": "ok"}], 400, "invalid"),
])
def test_role_create_refusals(api, body, status, code):
    before = Role.objects.count()
    response = call(api.admin(), "POST", f"{API}/roles/", body)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert Role.objects.count() == before


def test_role_rename_is_not_possible(api, make_role):
    make_role("viewer")
    response = call(api.admin(), "PATCH", f"{API}/roles/viewer/", {"name": "other"})
    assert response.status_code == 400


def test_role_with_mappings_is_a_conflict_unless_forced(api, make_role):
    make_role("viewer")
    mapping, _ = role_service.set_mapping(claim="groups", value="viewers", role="viewer", actor="test")
    client = api.admin()
    refused = call(client, "DELETE", f"{API}/roles/viewer/")
    assert refused.status_code == 409 and refused.json()["code"] == "role_has_mappings"
    assert Role.objects.filter(name="viewer").exists() and RoleMapping.objects.filter(pk=mapping.pk).exists()
    assert call(client, "DELETE", f"{API}/roles/viewer/?force=true").status_code == 204
    assert not RoleMapping.objects.filter(pk=mapping.pk).exists()
    assert _events("role.removed").get().data["mappings_removed"][0]["value"] == "viewers"


def test_unknown_role_is_404(api):
    assert api.admin().get(f"{API}/roles/nope/").status_code == 404
    assert call(api.admin(), "DELETE", f"{API}/roles/nope/").status_code == 404


# --- mappings ------------------------------------------------------------------------------------


def test_mapping_crud(api, make_role, make_idp):
    make_role("viewer")
    make_idp("corp")
    client = api.admin()
    body = {"idp": "corp", "claim": "groups", "value": "CN=Viewers,.*", "match": "regex", "role": "viewer"}
    created = call(client, "POST", f"{API}/mappings/", body)
    assert created.status_code == 201, created.content
    mapping_id = created.json()["id"]
    assert {k: created.json()[k] for k in body} == body
    again = call(client, "POST", f"{API}/mappings/", body)
    assert again.status_code == 200 and again.json()["id"] == mapping_id  # idempotent
    assert _events("mapping.created").filter(data__after__id=mapping_id).count() == 1

    listed = client.get(f"{API}/mappings/", {"role": "viewer"}).json()
    assert [m["id"] for m in listed["results"]] == [mapping_id]
    for_corp = client.get(f"{API}/mappings/", {"idp": "corp"}).json()
    assert {m["idp"] for m in for_corp["results"]} == {"corp", None}  # its own and global rules
    assert client.get(f"{API}/mappings/", {"claim": "nothing"}).json()["count"] == 0

    patched = call(client, "PATCH", f"{API}/mappings/{mapping_id}/",
                   {"value": "viewers", "match": "exact", "idp": None})
    assert patched.status_code == 200, patched.content
    assert patched.json()["id"] == mapping_id
    mapping = RoleMapping.objects.get(pk=mapping_id)
    assert (mapping.value, mapping.match, mapping.idp_id) == ("viewers", "exact", None)
    changed = _events("mapping.changed").get()
    assert changed.data["before"]["match"] == "regex" and changed.data["after"]["idp"] is None

    assert call(client, "DELETE", f"{API}/mappings/{mapping_id}/").status_code == 204
    assert not RoleMapping.objects.filter(pk=mapping_id).exists()
    assert _events("mapping.removed").get().data["before"]["id"] == mapping_id
    assert client.get(f"{API}/mappings/{mapping_id}/").status_code == 404


@pytest.mark.parametrize(("body", "code"), [
    ({"claim": "groups", "value": "x", "role": "nope"}, "role_not_found"),
    ({"claim": "groups", "value": "x", "role": "portal_admin", "idp": "nope"}, "idp_not_found"),
    ({"claim": "groups", "value": "(unclosed", "match": "regex", "role": "portal_admin"}, "invalid"),
    ({"claim": "groups", "value": "x", "match": "glob", "role": "portal_admin"}, "invalid"),
    ({"claim": " ", "value": "x", "role": "portal_admin"}, "invalid"),
    ({"claim": "groups", "value": "", "role": "portal_admin"}, "invalid"),
    ({"claim": "groups", "value": "a\u0000b", "role": "portal_admin"}, "invalid"),
])
def test_mapping_refusals(api, body, code):
    before = RoleMapping.objects.count()
    response = call(api.admin(), "POST", f"{API}/mappings/", body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert RoleMapping.objects.count() == before


def test_mapping_update_into_a_duplicate_is_a_conflict(api):
    first = RoleMapping.objects.get(value="api_admins")
    second = RoleMapping.objects.get(value="auditors")
    response = call(api.admin(), "PATCH", f"{API}/mappings/{second.pk}/",
                    {"value": "api_admins", "role": "portal_admin"})
    assert response.status_code == 409, response.content
    assert RoleMapping.objects.get(pk=second.pk).value == "auditors"
    assert RoleMapping.objects.get(pk=first.pk).value == "api_admins"


def test_mapping_update_to_unknown_role_is_400(api):
    mapping = RoleMapping.objects.get(value="auditors")
    response = call(api.admin(), "PATCH", f"{API}/mappings/{mapping.pk}/", {"role": "nope"})
    assert response.status_code == 400 and response.json()["code"] == "role_not_found"


# --- the simulator -------------------------------------------------------------------------------


def test_simulator_explains_which_rule_grants_which_role(api, make_idp):
    make_idp("corp", attribute_map={"memberOf": "groups"})
    client = api.admin()
    events_before = AuditEvent.objects.count()
    response = call(client, "POST", f"{API}/mappings/test/",
                    {"claims": {"groups": ["api_admins", "other"], "email": "a@x"}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["idp"] is None and body["attributes"]["groups"] == ["api_admins", "other"]
    assert list(body["roles"]) == ["portal_admin"]
    rule = body["roles"]["portal_admin"][0]
    assert rule["claim"] == "groups" and rule["value"] == "api_admins" and rule["id"]
    # Through an IdP's attribute map.
    mapped = call(client, "POST", f"{API}/mappings/test/",
                  {"idp": "corp", "claims": {"memberOf": "auditors"}})
    assert list(mapped.json()["roles"]) == ["auditor"]
    # No match, no roles.
    assert call(client, "POST", f"{API}/mappings/test/", {"claims": {}}).json()["roles"] == {}
    assert AuditEvent.objects.count() == events_before  # a simulation changes nothing


def _nested(depth: int):
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("body", "code"), [
    ({"idp": "nope", "claims": {}}, "idp_not_found"),
    ({"claims": ["groups"]}, "invalid"),
    ({"claims": "groups=api_admins"}, "invalid"),
    ({}, "invalid"),
    ({"claims": {"groups": _nested(50)}}, "invalid"),
])
def test_simulator_refusals(api, body, code):
    response = call(api.admin(), "POST", f"{API}/mappings/test/", body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code


def test_simulator_survives_absurd_json(api):
    client = api.admin()
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(f"{API}/mappings/test/", data='{"claims": {"g": ' + deep + "}}",
                           content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "parse_error"


def test_mapping_update_reaches_the_login_rule_cache(api):
    """Logins read rules through a per-process cache: an API change must invalidate it."""
    from broker import rbac

    mapping = RoleMapping.objects.get(value="auditors")
    assert "auditors" in [r.value for r in rbac.current_rules(None)]  # warm the cache
    response = call(api.admin(), "PATCH", f"{API}/mappings/{mapping.pk}/", {"value": "audit-team"})
    assert response.status_code == 200, response.content
    values = [r.value for r in rbac.current_rules(None)]
    assert "audit-team" in values and "auditors" not in values
