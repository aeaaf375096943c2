"""Identity providers through the Admin API: register (SAML from XML or URL, OIDC against a
real provider), read (secrets never shown), update, enable/disable, refresh, remove. Every
change is checked in the database and in the audit log."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from broker.models import AuditEvent, FederatedIdentity, IdentityProvider
from tests.api.conftest import API, call
from tests.oidc.conftest import PRIMARY_SECRET, SECRET_ENV
from tests.saml.idp import TestIdP

pytestmark = pytest.mark.django_db


def _events(action: str):
    return AuditEvent.objects.filter(action=action)


class MetadataServer:
    """Serves a SAML metadata document over real HTTP on loopback."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/samlmetadata+xml")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metadata.xml"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def saml_idp(tmp_path):
    return TestIdP(tmp_path, entity_id="https://adfs.corp.example/adfs")


@pytest.fixture
def metadata_server(saml_idp):
    server = MetadataServer(saml_idp.metadata_xml())
    yield server
    server.stop()


def test_list_and_retrieve_never_show_secrets(api):
    client = api.admin()
    listed = client.get(f"{API}/idps/")
    assert listed.status_code == 200
    body = listed.json()
    assert body["count"] == 1 and body["results"][0]["slug"] == "op"
    one = client.get(f"{API}/idps/op/").json()
    assert one["protocol"] == "oidc" and one["config"]["issuer"] == api.fake.issuer
    assert one["config"]["credentials"]["client_secret"] == "env"
    for response in (listed, client.get(f"{API}/idps/op/")):
        assert SECRET_ENV.encode() not in response.content
        assert PRIMARY_SECRET.encode() not in response.content
        assert b"discovery\"" not in response.content  # the bulky cached document stays inside


def test_register_saml_from_xml(api, saml_idp):
    response = call(api.admin(), "POST", f"{API}/idps/", {
        "protocol": "saml", "slug": "adfs", "name": "Corp ADFS",
        "metadata_xml": saml_idp.metadata_xml().decode(), "attribute_map": {"department": "groups"},
        "allow_unsolicited": True,
    })
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["config"]["entity_id"] == saml_idp.entity_id
    assert body["config"]["allow_unsolicited"] is True and body["enabled"] is True
    assert "metadata_xml" not in body["config"]
    idp = IdentityProvider.objects.get(slug="adfs")
    assert idp.protocol == "saml" and idp.attribute_map == {"department": "groups"}
    event = _events("idp.created").get(idp="adfs")
    assert event.actor == "op:admin-1" and event.data["via"] == "api"


def test_register_saml_from_url_then_refresh(api, metadata_server, saml_idp):
    client = api.admin()
    response = call(client, "POST", f"{API}/idps/", {
        "protocol": "saml", "slug": "adfs", "metadata_url": metadata_server.url})
    assert response.status_code == 201, response.content
    assert response.json()["config"]["metadata_url"] == metadata_server.url
    refreshed = call(client, "POST", f"{API}/idps/adfs/refresh/")
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json() == {"slug": "adfs", "changed": False, "changes": {}}
    # The IdP's metadata host goes down: 502, the last-known-good copy stays, audited.
    metadata_server.stop()
    failed = call(client, "POST", f"{API}/idps/adfs/refresh/")
    assert failed.status_code == 502 and failed.json()["code"] == "refresh_failed"
    assert IdentityProvider.objects.get(slug="adfs").config["entity_id"] == saml_idp.entity_id
    assert _events("idp.metadata_refresh_failed").filter(idp="adfs").exists()


def test_refresh_of_xml_registered_idp_is_a_conflict(api, saml_idp):
    client = api.admin()
    call(client, "POST", f"{API}/idps/", {"protocol": "saml", "slug": "adfs",
                                          "metadata_xml": saml_idp.metadata_xml().decode()})
    response = call(client, "POST", f"{API}/idps/adfs/refresh/")
    assert response.status_code == 409 and response.json()["code"] == "not_refreshable"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"protocol": "saml", "slug": "bad", "metadata_xml": "<not-metadata/>"}, 400, "metadata_malformed"),
    ({"protocol": "saml", "slug": "bad", "metadata_xml": "<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"},
     400, "metadata_malformed"),
    ({"protocol": "saml", "slug": "bad"}, 400, "invalid"),
    ({"protocol": "saml", "slug": "Bad Slug", "metadata_xml": "<x/>"}, 400, "invalid"),
    ({"protocol": "ldap", "slug": "bad"}, 400, "invalid"),
    ({"slug": "bad"}, 400, "invalid"),
    ({"protocol": "saml", "slug": "bad", "metadata_url": "file:///etc/passwd"}, 400, "invalid"),
    ({"protocol": "saml", "slug": "bad", "metadata_xml": "<x/>", "surprise": 1}, 400, "invalid"),
])
def test_register_refuses_bad_input_without_registering(api, body, status, code):
    response = call(api.admin(), "POST", f"{API}/idps/", body)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not IdentityProvider.objects.filter(slug="bad").exists()


def test_register_oidc_against_a_real_provider(api, make_fake):
    other = make_fake()
    response = call(api.admin(), "POST", f"{API}/idps/", {
        "protocol": "oidc", "slug": "kc", "issuer": other.issuer, "client_id": other.client_id,
        "client_secret_env": "OIDC_SECRET_KC", "scopes": "openid email", "algorithms": ["RS256", "ES256"],
    })
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["config"]["credentials"] == {"client_secret": "env", "client_secret_secondary": None,
                                             "private_key": None, "mtls_key": None}
    assert b"OIDC_SECRET_KC" not in response.content
    idp = IdentityProvider.objects.get(slug="kc")
    assert idp.config["client_secret_env"] == "OIDC_SECRET_KC" and idp.config["discovery"]
    assert _events("idp.created").get(idp="kc").data["via"] == "api"
    assert other.discovery_requests == 1 and other.jwks_requests == 1


@pytest.mark.parametrize(("extra", "code"), [
    ({"client_secret": "hunter2-the-real-secret"}, "secret_not_accepted"),
    ({"client_secret_env": "OIDC_SECRET_X", "private_key": "-----BEGIN PRIVATE KEY-----"},
     "secret_not_accepted"),
    ({"client_secret_env": "SECRET_KEY"}, "invalid"),  # outside API_SECRET_ENV_PREFIX
    ({"client_secret_file": "/etc/broker/secret_key"}, "invalid"),  # no API_SECRET_FILE_DIR
    ({"client_secret_env": "OIDC_SECRET_X", "client_secret_file": "/x"}, "invalid"),
    ({}, "invalid"),
])
def test_register_oidc_accepts_only_safe_secret_references(api, make_fake, extra, code):
    other = make_fake()
    response = call(api.admin(), "POST", f"{API}/idps/", {
        "protocol": "oidc", "slug": "kc", "issuer": other.issuer, "client_id": "c", **extra})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert b"hunter2" not in response.content
    assert not IdentityProvider.objects.filter(slug="kc").exists()
    assert other.discovery_requests == 0


def test_register_oidc_file_reference_inside_the_allowed_folder(api, make_fake, settings, tmp_path):
    settings.API_SECRET_FILE_DIR = str(tmp_path)
    other = make_fake()
    base = {"protocol": "oidc", "issuer": other.issuer, "client_id": "c"}
    outside = call(api.admin(), "POST", f"{API}/idps/",
                   {**base, "slug": "kc1", "client_secret_file": f"{tmp_path}/../elsewhere/secret"})
    assert outside.status_code == 400
    inside = call(api.admin(), "POST", f"{API}/idps/",
                  {**base, "slug": "kc2", "client_secret_file": f"{tmp_path}/kc.secret"})
    assert inside.status_code == 201, inside.content
    assert inside.json()["config"]["credentials"]["client_secret"] == "file"
    assert str(tmp_path).encode() not in inside.content


def test_register_oidc_with_unreachable_or_lying_provider(api, make_fake):
    other = make_fake()
    other.discovery_issuer = "https://someone-else.example"
    response = call(api.admin(), "POST", f"{API}/idps/", {
        "protocol": "oidc", "slug": "kc", "issuer": other.issuer, "client_id": "c",
        "client_secret_env": "OIDC_SECRET_KC"})
    assert response.status_code == 400 and response.json()["code"] == "oidc_discovery_mismatch"
    other.stop()
    response = call(api.admin(), "POST", f"{API}/idps/", {
        "protocol": "oidc", "slug": "kc", "issuer": other.issuer, "client_id": "c",
        "client_secret_env": "OIDC_SECRET_KC"})
    assert response.status_code == 400 and response.json()["code"] == "idp_unavailable"
    assert not IdentityProvider.objects.filter(slug="kc").exists()


def test_duplicate_slug_is_a_conflict(api, saml_idp):
    response = call(api.admin(), "POST", f"{API}/idps/", {
        "protocol": "saml", "slug": "op", "metadata_xml": saml_idp.metadata_xml().decode()})
    assert response.status_code == 409 and response.json()["code"] == "already_exists"


def test_update_limited_fields(api, make_idp):
    make_idp("corp")
    client = api.admin()
    response = call(client, "PATCH", f"{API}/idps/corp/", {
        "name": "Corp IdP", "attribute_map": {"memberOf": "groups"}, "jit_allowed": False,
        "clock_skew_seconds": 120, "legacy_crypto": True})
    assert response.status_code == 200, response.content
    idp = IdentityProvider.objects.get(slug="corp")
    assert (idp.name, idp.attribute_map, idp.jit_allowed, idp.clock_skew_seconds, idp.legacy_crypto) == (
        "Corp IdP", {"memberOf": "groups"}, False, 120, True)
    changed = _events("idp.changed").get(idp="corp")
    assert changed.data["before"]["name"] == "Corp" and changed.data["after"]["name"] == "Corp IdP"
    assert _events("idp.legacy_crypto_enabled").filter(idp="corp").exists()
    # Trust material and the protocol are not editable here.
    for body in ({"config": {"metadata_url": "https://evil.example/md"}}, {"protocol": "oidc"},
                 {"slug": "renamed"}, {"clock_skew_seconds": 10**12}, {"attribute_map": {"a\u0000": "b"}}):
        refused = call(client, "PATCH", f"{API}/idps/corp/", body)
        assert refused.status_code == 400, (body, refused.content)
    # No change, no event.
    call(client, "PATCH", f"{API}/idps/corp/", {"name": "Corp IdP"})
    assert _events("idp.changed").filter(idp="corp").count() == 1


def test_enable_and_disable(api, make_idp):
    make_idp("corp")
    client = api.admin()
    response = call(client, "POST", f"{API}/idps/corp/disable/")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert not IdentityProvider.objects.get(slug="corp").enabled
    assert _events("idp.disabled").filter(idp="corp").count() == 1
    call(client, "POST", f"{API}/idps/corp/disable/")  # already disabled: no second event
    assert _events("idp.disabled").filter(idp="corp").count() == 1
    assert call(client, "POST", f"{API}/idps/corp/enable/").json()["enabled"] is True
    assert _events("idp.enabled").filter(idp="corp").count() == 1


def test_oidc_refresh_and_its_failure(api):
    client = api.admin()
    response = call(client, "POST", f"{API}/idps/op/refresh/")
    assert response.status_code == 200, response.content
    assert response.json()["changed"] is False
    api.fake.status["discovery"] = 500
    failed = call(client, "POST", f"{API}/idps/op/refresh/")
    assert failed.status_code == 502 and failed.json()["code"] == "refresh_failed"
    assert _events("idp.discovery_refresh_failed").filter(idp="op").exists()


def test_remove_refused_while_identities_are_linked_unless_forced(api, make_idp, make_principal,
                                                                  session_request):
    from broker.login import complete_login

    make_idp("corp")
    complete_login(session_request(), make_principal(subject="dave"))
    client = api.admin()
    refused = call(client, "DELETE", f"{API}/idps/corp/")
    assert refused.status_code == 409 and refused.json()["code"] == "idp_has_identities"
    assert IdentityProvider.objects.filter(slug="corp").exists()
    assert call(client, "DELETE", f"{API}/idps/corp/?force=true").status_code == 204
    assert not IdentityProvider.objects.filter(slug="corp").exists()
    assert not FederatedIdentity.objects.filter(subject="dave").exists()
    event = _events("idp.removed").get(idp="corp")
    assert event.data["identities_unlinked"] == 1 and event.actor == "op:admin-1"


def test_unknown_idp_is_a_json_404(api):
    response = api.admin().get(f"{API}/idps/nope/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert call(api.admin(), "POST", f"{API}/idps/nope/enable/").status_code == 404
