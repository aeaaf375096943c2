"""SAML logins through pysaml2's own IdP, end to end through the broker's HTTP endpoints."""

from __future__ import annotations

import pytest

from broker.models import AuditEvent, FederatedIdentity
from broker.services import roles as role_service

pytestmark = pytest.mark.django_db


def test_login_with_signed_response_and_assertion(saml):
    role_service.add_role("portal_admin", grants_superuser=True, actor="t")
    role_service.set_mapping(claim="affiliation", value="staff", role="portal_admin", actor="t")
    response = saml.login()
    assert response.status_code == 302, response.content[:1000]
    assert response["Location"] == "/portal/"
    me = saml.client.get("/sso/me/").json()
    assert me["idp"] == "corp" and me["subject"] == "alice"
    assert me["roles"] == ["portal_admin"]
    assert me["attributes"]["email"] == ["alice@corp.example"]
    assert me["attributes"]["affiliation"] == ["staff"]
    link = FederatedIdentity.objects.get(idp__slug="corp", subject="alice")
    assert link.last_attributes["email"] == ["alice@corp.example"]
    assert link.last_attributes["given_name"] == ["Alice"]
    event = AuditEvent.objects.get(action="login.succeeded")
    assert (event.idp, event.subject, event.data["protocol"]) == ("corp", "alice", "saml")


def test_signed_assertion_inside_unsigned_response(saml):
    response = saml.login(sign_response=False, sign_assertion=True)
    assert response.status_code == 302, response.content[:1000]


def test_signed_response_with_unsigned_assertion(saml):
    response = saml.login(sign_response=True, sign_assertion=False)
    assert response.status_code == 302, response.content[:1000]


def test_encrypted_signed_assertion(saml, sp_keys):
    response = saml.login(encrypt_cert=sp_keys.cert_pem, sign_response=False, sign_assertion=True)
    assert response.status_code == 302, response.content[:1000]
    assert saml.client.get("/sso/me/").json()["subject"] == "alice"


def test_sp_metadata_is_signed_and_names_endpoints(saml, sp_keys):
    xml = saml.client.get("/sso/corp/saml/metadata/").content.decode()
    assert "https://sso.test/sso/corp/saml/acs/" in xml
    assert "https://sso.test/sso/corp/saml/slo/" in xml
    assert sp_keys.cert_b64[:60] in xml
    assert "<ds:Signature" in xml or ":Signature" in xml
