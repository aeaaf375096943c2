"""The auditor role: sees and exports the audit log, changes nothing. The admin is read-only."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from broker import audit, rbac
from broker.audit import offline, setup, signing
from broker.models import AuditEvent, FederatedIdentity, Role, UserRole

from .conftest import run

pytestmark = pytest.mark.django_db(transaction=True)


class Browser:
    def __init__(self, client, user) -> None:
        self.client, self.user = client, user

    def get(self, path: str, **kwargs):
        self.client.force_login(self.user)  # sessions live in a Redis database other tests flush
        return self.client.get(path, secure=True, **kwargs)

    def post(self, path: str, data=None, **kwargs):
        self.client.force_login(self.user)
        return self.client.post(path, data, secure=True, **kwargs)


@pytest.fixture
def auditor(client, make_idp, audit_files):
    run("audit", "setup-roles", "--skip-database")
    user = get_user_model().objects.create_user("audrey")
    FederatedIdentity.objects.create(idp=make_idp("corp"), subject="audrey", user=user)
    UserRole.objects.create(user=user, role=Role.objects.get(name=setup.AUDITOR_ROLE),
                            source=UserRole.Source.MANUAL)
    rbac.apply_role_effects(user)
    user.refresh_from_db()
    return Browser(client, user)


def admin_url(model: str, view: str, *args) -> str:
    return reverse(f"admin:broker_{model}_{view}", args=args)


def test_setup_roles_creates_a_read_only_auditor_role(auditor):
    role = Role.objects.get(name="auditor")
    assert role.grants_staff and not role.grants_superuser
    assert sorted(role.group.permissions.values_list("codename",
                                                     flat=True)) == sorted(setup.AUDITOR_PERMISSIONS)
    user = auditor.user
    assert user.is_staff and not user.is_superuser
    assert user.has_perm("broker.view_auditevent") and user.has_perm("broker.export_auditevent")
    assert not user.has_perm("broker.change_auditevent") and not user.has_perm("broker.view_identityprovider")
    before = AuditEvent.objects.count()
    run("audit", "setup-roles", "--skip-database")  # idempotent: nothing changes, nothing audited
    assert Role.objects.filter(name="auditor").count() == 1
    assert AuditEvent.objects.count() == before


def test_auditor_sees_and_filters_the_audit_log(auditor):
    audit.record("login.failed", outcome="failure", actor="mallory", idp="corp", reason="saml_audience")
    audit.record("login.succeeded", actor="alice", idp="corp")
    page = auditor.get(admin_url("auditevent", "changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    for title in ("By action", "By actor", "By idp", "By time"):
        assert title in html
    filtered = auditor.get(admin_url("auditevent", "changelist"), data={"actor": "mallory"})
    assert filtered.status_code == 200
    assert [e.actor for e in filtered.context["cl"].result_list] == ["mallory"]
    by_action = auditor.get(admin_url("auditevent", "changelist"), data={"action": "login.succeeded"})
    assert [e.actor for e in by_action.context["cl"].result_list] == ["alice"]
    event = AuditEvent.objects.get(actor="alice")
    detail = auditor.get(admin_url("auditevent", "change", event.pk))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()


def test_auditor_changes_nothing(auditor):
    event = audit.record("test.x", actor="alice")
    assert auditor.get(admin_url("auditevent", "add")).status_code == 403
    assert auditor.post(admin_url("auditevent", "delete", event.pk), {"post": "yes"}).status_code == 403
    assert auditor.post(admin_url("auditevent", "change", event.pk), {"reason": "x"}).status_code == 403
    for model in ("identityprovider", "role", "rolemapping", "userrole"):
        assert auditor.get(admin_url(model, "changelist")).status_code == 403, model
    assert auditor.post(admin_url("role", "add"), {"name": "mine"}).status_code == 403
    assert not Role.objects.filter(name="mine").exists()


def test_auditor_exports_over_http_and_it_is_audited(auditor, audit_files):
    for i in range(5):
        audit.record("login.succeeded", actor=f"user{i}", idp="corp")
    response = auditor.get(admin_url("auditevent", "export"),
                           data={"since": "2000-01-01", "until": "2100-01-01", "idp": "corp"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson" and response.streaming
    body = b"".join(response.streaming_content)
    path = audit_files.dir / "http.jsonl"
    path.write_bytes(body)
    report = offline.verify_export(path, signing.load_public(audit_files.public))
    assert report.ok, report.text()
    manifest = json.loads(body.splitlines()[-1])["manifest"]
    assert manifest["count"] == 5 and manifest["exported_by"] == "audrey"
    exported = AuditEvent.objects.get(action="audit.exported")
    assert exported.actor == "audrey" and exported.data["destination"] == "http"
    assert exported.data["export_id"] == manifest["export_id"] == response["X-Audit-Export-Id"]


def test_export_needs_the_export_permission(client, admin_user, audit_files, django_user_model):
    staff = django_user_model.objects.create_user("staffer", is_staff=True)
    browser = Browser(client, staff)
    response = browser.get(admin_url("auditevent", "export"), data={"since": "2000-01-01",
                                                                    "until": "2100-01-01"})
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="audit.exported").exists()
    client.logout()
    anonymous = client.get(admin_url("auditevent", "export"), secure=True)
    assert anonymous.status_code == 302  # to the admin login
    bad = Browser(client, admin_user).get(admin_url("auditevent", "export"), data={"since": "x"})
    assert bad.status_code == 400


def test_superuser_admin_is_read_only_too(client, admin_user):
    event = audit.record("test.x", actor="alice")
    browser = Browser(client, admin_user)
    assert browser.get(admin_url("auditevent", "add")).status_code == 403
    assert browser.post(admin_url("auditevent", "delete", event.pk), {"post": "yes"}).status_code == 403
    page = browser.get(admin_url("auditevent", "changelist")).content.decode()
    assert "delete_selected" not in page
    assert AuditEvent.objects.filter(pk=event.pk).exists()
