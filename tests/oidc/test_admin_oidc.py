"""Registering an OpenID Provider through the Django admin."""

from __future__ import annotations

import pytest

from broker.models import AuditEvent, IdentityProvider

pytestmark = pytest.mark.django_db
URL = "/admin/broker/identityprovider/add-oidc/"


def _form(fake, **changes):
    data = {"slug": "op", "name": "Fake OP", "issuer": fake.issuer, "client_id": fake.client_id,
            "client_secret_env": "OIDC_SECRET_FAKE", "auth_method": "client_secret_post",
            "scopes": "openid profile email", "algorithms": "RS256", "attribute_map": "{}",
            "jit_allowed": "on"}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_register_through_the_admin(admin_client, fake_op):
    assert b"add-oidc" in admin_client.get("/admin/broker/identityprovider/").content
    response = admin_client.post(URL, _form(fake_op))
    assert response.status_code == 302, response.content[:2000]
    idp = IdentityProvider.objects.get(slug="op")
    assert idp.protocol == "oidc" and idp.config["discovery"]["issuer"] == fake_op.issuer
    assert idp.config["client_secret_env"] == "OIDC_SECRET_FAKE"
    assert AuditEvent.objects.get(action="idp.created").data["via"] == "admin"


@pytest.mark.parametrize("changes,message", [
    ({"issuer": None}, b"This field is required"),
    ({"client_secret_env": "SECRET_KEY"}, b"OIDC_SECRET_"),
    ({"client_secret_env": "", "client_secret_file": ""}, b"exactly one secret reference"),
    ({"algorithms": "none"}, b"Refused"),
])
def test_refusals_change_nothing(admin_client, fake_op, changes, message):
    response = admin_client.post(URL, _form(fake_op, **changes))
    assert response.status_code == 200 and message in response.content
    assert not IdentityProvider.objects.exists()


def test_discovery_issuer_mismatch_is_refused(admin_client, fake_op):
    fake_op.discovery_issuer = fake_op.issuer + "/other"
    response = admin_client.post(URL, _form(fake_op))
    assert response.status_code == 200 and b"oidc_discovery_mismatch" in response.content
    assert not IdentityProvider.objects.exists()
