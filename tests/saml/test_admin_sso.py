"""The Django admin behind SSO: a real IdP login decides admin access through mappings."""

from __future__ import annotations

import pytest

from broker.models import AuditEvent
from broker.services import roles as role_service

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_mapping(db):
    role_service.add_role("portal_admin", grants_superuser=True, actor="t")
    role_service.add_role("viewer", actor="t")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    mapping, _ = role_service.set_mapping(claim="groups", value="staff", role="viewer", actor="t")
    return mapping


def _login(saml, groups):
    return saml.login(attributes={"mail": ["alice@corp.example"], "isMemberOf": groups})


def test_unauthenticated_admin_goes_to_the_idp_picker(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    follow = client.get(response["Location"])
    assert follow.status_code == 302
    assert follow["Location"] == "/sso/?next=%2Fadmin%2F"


def test_sso_login_grants_admin_and_revocation_at_the_idp_removes_it(saml, admin_mapping):
    assert _login(saml, ["api_admins"]).status_code == 302
    assert saml.client.get("/admin/").status_code == 200
    assert saml.client.get("/admin/broker/identityprovider/").status_code == 200

    # The IdP drops the group: at the next login the admin rights are gone.
    assert _login(saml, ["other"]).status_code == 302
    response = saml.client.get("/admin/")
    assert response.status_code == 302
    denied = saml.client.get(response["Location"])
    assert denied.status_code == 403 and b"admin_forbidden" in denied.content


def test_removing_a_mapping_ends_the_holders_sessions(saml, admin_mapping):
    assert _login(saml, ["staff"]).status_code == 302
    assert saml.client.get("/sso/me/").json()["roles"] == ["viewer"]
    role_service.remove_mapping(admin_mapping.pk, actor="t")
    assert saml.client.get("/sso/me/").status_code == 401
    event = AuditEvent.objects.get(action="mapping.removed")
    assert event.data["sessions_ended"] == 1
