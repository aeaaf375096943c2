"""The Django admin as a superuser: pages render, changes are audited, the audit log is read-only."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from broker import audit
from broker.models import AuditEvent, FederatedIdentity, IdentityProvider, Role, RoleMapping, UserRole

pytestmark = pytest.mark.django_db


class AdminBrowser:
    """pytest-django's ``admin_client`` over https, logged in again before each request.

    BASE_URL is https, so SECURE_SSL_REDIRECT is on: plain-http requests would get a 301.

    Sessions live in Redis, and the autouse ``_clean_cache`` fixture in conftest.py flushes
    the whole test Redis database at the start of every test: a test running at the same
    time in another worker (pytest -n) or another checkout would log this client out
    mid-test. Re-attaching the session keeps these tests about the admin, not that race.
    """

    def __init__(self, client, user) -> None:
        self.client, self.user = client, user

    def get(self, path: str, **kwargs):
        self.client.force_login(self.user)
        return self.client.get(path, secure=True, **kwargs)

    def post(self, path: str, data=None, **kwargs):
        self.client.force_login(self.user)
        return self.client.post(path, data, secure=True, **kwargs)


@pytest.fixture
def admin(admin_client, admin_user) -> AdminBrowser:
    return AdminBrowser(admin_client, admin_user)


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:broker_{model}_{view}", args=args)


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_after(event_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(id__gt=event_id).order_by("id"))


@pytest.fixture
def populated(make_idp, make_role):
    """One row of every broker model, so the changelists render real rows."""
    idp = make_idp("corp", name="Corp ADFS")
    role = make_role("portal_admin", grants_staff=True)
    RoleMapping.objects.create(idp=idp, claim="groups", value="api_admins", role=role)
    user = get_user_model().objects.create_user(username="alice")
    FederatedIdentity.objects.create(idp=idp, subject="alice-subject-123", user=user)
    UserRole.objects.create(user=user, role=role, source=UserRole.Source.MANUAL)
    audit.record("test.marker", actor="tester", idp="corp", reason="marker_reason")
    return idp


@pytest.mark.parametrize("model, shown", [
    ("identityprovider", "Corp ADFS"),
    ("role", "portal_admin"),
    ("rolemapping", "api_admins"),
    ("federatedidentity", "alice-subject-123"),
    ("userrole", "alice"),
    ("auditevent", "test.marker"),
])
def test_changelists_render(admin, populated, model, shown):
    response = admin.get(url(model, "changelist"))
    assert response.status_code == 200
    assert shown in response.content.decode()


@pytest.mark.parametrize("model", ["identityprovider", "role", "rolemapping", "federatedidentity",
                                   "userrole"])
def test_add_forms_render(admin, model):
    assert admin.get(url(model, "add")).status_code == 200


def test_changelists_require_login(client, populated):
    response = client.get(url("identityprovider", "changelist"), secure=True)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_role_created_through_admin_gets_group_and_one_audit_event(admin, admin_user):
    since = last_event_id()

    response = admin.post(url("role", "add"), {
        "name": "portal_admin",
        "description": "Portal administrators",
        "grants_staff": "on",
        "mappings-TOTAL_FORMS": "0",
        "mappings-INITIAL_FORMS": "0",
        "mappings-MIN_NUM_FORMS": "0",
        "mappings-MAX_NUM_FORMS": "1000",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    role = Role.objects.get(name="portal_admin")
    assert role.description == "Portal administrators"
    assert role.grants_staff is True
    assert role.group.name == "role:portal_admin"
    assert Group.objects.filter(pk=role.group_id).exists()
    new = events_after(since)
    assert [e.action for e in new] == ["role.created"]
    assert new[0].actor == admin_user.get_username()
    assert new[0].data["via"] == "admin"
    assert new[0].data["after"]["name"] == "portal_admin"
    assert new[0].data["after"]["grants_staff"] is True


def test_role_add_form_refuses_invalid_name(admin):
    since = last_event_id()
    response = admin.post(url("role", "add"), {
        "name": "bad name!", "mappings-TOTAL_FORMS": "0", "mappings-INITIAL_FORMS": "0",
    })
    assert response.status_code == 200  # form redisplayed with errors
    assert not Role.objects.exists()
    assert not Group.objects.filter(name__startswith="role:").exists()
    assert events_after(since) == []


def _idp_form(idp: IdentityProvider, **changes) -> dict:
    data = {
        "slug": idp.slug,
        "name": idp.name,
        "protocol": idp.protocol,
        "config": json.dumps(idp.config),
        "attribute_map": json.dumps(idp.attribute_map),
        "subject_source": idp.subject_source,
        "clock_skew_seconds": "" if idp.clock_skew_seconds is None else str(idp.clock_skew_seconds),
    }
    for flag in ("enabled", "jit_allowed", "legacy_crypto"):
        if getattr(idp, flag):
            data[flag] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_idp_changed_through_admin_is_audited_with_before_and_after(admin, admin_user, make_idp):
    idp = make_idp("corp", name="Corp ADFS", config={"client_secret_env": "MY_VAR"})
    assert admin.get(url("identityprovider", "change", idp.pk)).status_code == 200
    since = last_event_id()

    response = admin.post(
        url("identityprovider", "change", idp.pk),
        _idp_form(idp, name="Corp AD FS 2019", enabled=None,
                  attribute_map=json.dumps({"memberOf": "groups"})),
            )

    assert response.status_code == 302, response.content.decode()[:2000]
    idp.refresh_from_db()
    assert (idp.name, idp.enabled, idp.attribute_map) == ("Corp AD FS 2019", False, {"memberOf": "groups"})
    new = events_after(since)
    assert [e.action for e in new] == ["idp.changed"]
    event = new[0]
    assert event.actor == admin_user.get_username()
    assert event.data["via"] == "admin"
    before, after = event.data["before"], event.data["after"]
    assert (before["name"], before["enabled"], before["attribute_map"]) == ("Corp ADFS", True, {})
    assert (after["name"], after["enabled"], after["attribute_map"]) == (
        "Corp AD FS 2019", False, {"memberOf": "groups"}
    )
    assert after["config"]["client_secret_env"] == "MY_VAR"


def test_idp_admin_refuses_a_secret_pasted_into_config(admin, make_idp):
    idp = make_idp("corp", name="Corp ADFS", config={"client_secret_env": "MY_VAR"})
    since = last_event_id()
    response = admin.post(
        url("identityprovider", "change", idp.pk),
        _idp_form(idp, config=json.dumps({"client_secret": "s3cr3t-value"})),
    )
    assert response.status_code == 200  # the form comes back with the error
    assert b"reference them instead" in response.content
    idp.refresh_from_db()
    assert idp.config == {"client_secret_env": "MY_VAR"}
    assert events_after(since) == []


def test_mapping_admin_refuses_invalid_regex(admin, make_role):
    role = make_role("portal_admin")
    since = last_event_id()
    response = admin.post(url("rolemapping", "add"), {
        "claim": "groups", "value": "api_(admins", "match": "regex", "role": str(role.pk),
    })
    assert response.status_code == 200
    assert "invalid regular expression" in response.content.decode()
    assert not RoleMapping.objects.exists()
    assert events_after(since) == []


# --- the audit log is read-only, superusers included ----------------------------------------


@pytest.fixture
def event() -> AuditEvent:
    return audit.record("test.marker", actor="tester", idp="corp", reason="original_reason",
                        detail="original")


def _stored(event_id: int) -> tuple:
    return AuditEvent.objects.filter(pk=event_id).values_list(
        "time", "action", "outcome", "actor", "idp", "reason", "data"
    ).get()


def test_audit_add_is_forbidden(admin):
    count = AuditEvent.objects.count()
    assert admin.get(url("auditevent", "add")).status_code == 403
    response = admin.post(url("auditevent", "add"), {
        "time": "2024-01-01 00:00:00", "action": "forged", "outcome": "success",
    })
    assert response.status_code == 403
    assert AuditEvent.objects.count() == count
    assert not AuditEvent.objects.filter(action="forged").exists()


def test_audit_change_page_is_read_only_and_post_changes_nothing(admin, event):
    original = _stored(event.pk)

    page = admin.get(url("auditevent", "change", event.pk))
    assert page.status_code == 200  # view permission: a read-only page
    html = page.content.decode()
    assert "original_reason" in html
    assert 'name="_save"' not in html
    assert 'name="reason"' not in html  # no editable inputs

    response = admin.post(url("auditevent", "change", event.pk), {
        "time": timezone.now().strftime("%Y-%m-%d %H:%M:%S"), "action": "tampered",
        "outcome": "failure", "actor": "mallory", "reason": "tampered", "data": "{}",
        "_save": "Save",
    })
    assert response.status_code == 403
    assert _stored(event.pk) == original


def test_audit_delete_is_forbidden(admin, event):
    original = _stored(event.pk)
    count = AuditEvent.objects.count()

    assert admin.get(url("auditevent", "delete", event.pk)).status_code == 403
    response = admin.post(url("auditevent", "delete", event.pk), {"post": "yes"})
    assert response.status_code == 403

    assert AuditEvent.objects.count() == count
    assert _stored(event.pk) == original


def test_audit_changelist_offers_no_bulk_delete(admin, event):
    count = AuditEvent.objects.count()
    changelist = admin.get(url("auditevent", "changelist"))
    assert "delete_selected" not in changelist.content.decode()

    admin.post(url("auditevent", "changelist"), {
        "action": "delete_selected", "_selected_action": [str(event.pk)], "post": "yes",
    })

    assert AuditEvent.objects.count() == count
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_mapping_simulator_page_shows_roles_and_rules(admin, make_role):
    from broker.services import roles as role_service

    make_role("portal_admin")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    page = admin.get("/admin/broker/rolemapping/simulate/")
    assert page.status_code == 200
    response = admin.post("/admin/broker/rolemapping/simulate/", {
        "claims": '{"http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": ["api_admins"]}'})
    assert response.status_code == 200
    html = response.content.decode()
    assert "portal_admin" in html and "groups = &#x27;api_admins&#x27;" in html
    before = AuditEvent.objects.count()
    admin.post("/admin/broker/rolemapping/simulate/", {"claims": "[1]"})
    assert AuditEvent.objects.count() == before  # simulating changes nothing


def test_idp_list_shows_status_and_warnings(admin, make_idp):
    make_idp("legacy", legacy_crypto=True, config={"metadata_valid_until": "2000-01-01T00:00:00+00:00"})
    html = admin.get("/admin/broker/identityprovider/").content.decode()
    assert "legacy crypto" in html and "metadata expired" in html
    assert '/sso/legacy/saml/metadata/' in html
