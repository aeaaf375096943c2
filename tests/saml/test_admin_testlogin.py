"""The admin's "test login": a real login at the IdP whose result is shown, not applied."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from broker.models import AuditEvent, FederatedIdentity, IdentityProvider
from broker.services import roles as role_service
from tests.saml.idp import post_body

pytestmark = pytest.mark.django_db


def test_test_login_shows_principal_and_roles_and_changes_nothing(saml, admin_user):
    role_service.add_role("portal_admin", actor="t")
    role_service.set_mapping(claim="affiliation", value="staff", role="portal_admin", actor="t")
    client = saml.client
    client.force_login(admin_user)
    idp = IdentityProvider.objects.get(slug="corp")
    users_before = get_user_model().objects.count()

    page = client.get(f"/admin/broker/identityprovider/{idp.pk}/change/")
    assert f"/admin/broker/identityprovider/{idp.pk}/test-login/".encode() in page.content
    start = client.get(f"/admin/broker/identityprovider/{idp.pk}/test-login/")
    assert start.status_code == 302
    request, relay_state = saml.idp.read_redirect(start["Location"])
    response = client.post("/sso/corp/saml/acs/", post_body(saml.response_for(request), relay_state))
    assert response.status_code == 302 and "/test-login/" in response["Location"]

    result = client.get(response["Location"])
    html = result.content.decode()
    assert result.status_code == 200
    assert "alice" in html and "portal_admin" in html and "alice@corp.example" in html
    # Nothing applied: no identity, no new user, the admin's own session untouched.
    assert not FederatedIdentity.objects.exists()
    assert get_user_model().objects.count() == users_before
    assert not AuditEvent.objects.filter(action="login.succeeded").exists()
    assert AuditEvent.objects.get(action="idp.test_login").data["roles"] == ["portal_admin"]
    assert client.get("/admin/").status_code == 200


def test_a_normal_login_cannot_read_a_test_result(saml, admin_user, client):
    assert client.get("/admin/broker/identityprovider/test-login/nosuchkey/").status_code == 302
