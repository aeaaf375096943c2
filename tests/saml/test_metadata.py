"""IdP metadata: registration, signed metadata, refresh with last-known-good, validUntil."""

from __future__ import annotations

import http.server
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from lxml import etree
from saml2.metadata import create_metadata_string
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from broker.models import AuditEvent, IdentityProvider
from broker.protocols.saml.metadata import MetadataError, refresh, register
from tests.saml.idp import TestIdP

pytestmark = pytest.mark.django_db
DS = "{http://www.w3.org/2000/09/xmldsig#}"


class MetadataServer:
    """A real HTTP server on loopback serving whatever ``body`` currently is."""

    def __init__(self) -> None:
        self.body: bytes = b""
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/samlmetadata+xml")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/metadata.xml"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def md_server():
    server = MetadataServer()
    yield server
    server.close()


def _subdir(base, name):
    path = base / name
    path.mkdir()
    return path


def _signed_metadata(idp: TestIdP) -> bytes:
    xml = create_metadata_string(None, config=idp.server.config, sign=True, sign_alg=SIG_RSA_SHA256,
                                 digest_alg=DIGEST_SHA256)
    return xml if isinstance(xml, bytes) else xml.encode()


def test_register_from_file_via_cli(tmp_path, sp_keys):
    idp = TestIdP(tmp_path)
    path = tmp_path / "idp.xml"
    path.write_bytes(idp.metadata_xml())
    call_command("idp", "add-saml", "corp", "--metadata-file", str(path), "--name", "Corp")
    record = IdentityProvider.objects.get(slug="corp")
    assert record.protocol == "saml" and record.config["entity_id"] == idp.entity_id
    assert record.config["sso"]["redirect"].endswith("/sso/redirect")
    event = AuditEvent.objects.get(action="idp.created")
    assert "metadata_xml" not in str(event.data)  # the document itself is not in the audit log
    assert event.data["metadata"]["fingerprints"]


def test_signed_metadata_verified_and_stripped_signature_refused(tmp_path, sp_keys):
    idp = TestIdP(tmp_path)
    signed = _signed_metadata(idp)
    cert = idp.cert_file.read_text()
    register("signed", metadata_xml=signed, signing_cert_pem=cert, actor="t")

    root = etree.fromstring(signed)
    root.remove(root.find(f"{DS}Signature"))
    with pytest.raises(MetadataError) as excinfo:
        register("stripped", metadata_xml=etree.tostring(root), signing_cert_pem=cert, actor="t")
    assert excinfo.value.reason == "metadata_unsigned"

    tampered = signed.replace(b"/sso/redirect", b"/sso/evil")
    with pytest.raises(MetadataError) as excinfo:
        register("tampered", metadata_xml=tampered, signing_cert_pem=cert, actor="t")
    assert excinfo.value.reason == "metadata_signature"

    other = TestIdP(_subdir(tmp_path, "x"), key_name="other")
    with pytest.raises(MetadataError):
        register("wrongkey", metadata_xml=signed, signing_cert_pem=other.cert_file.read_text(), actor="t")
    assert list(IdentityProvider.objects.values_list("slug", flat=True)) == ["signed"]


def test_doctype_in_metadata_refused(tmp_path, sp_keys):
    xml = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + \
        TestIdP(tmp_path).metadata_xml().split(b"?>", 1)[-1]
    with pytest.raises(MetadataError) as excinfo:
        register("evil", metadata_xml=xml, actor="t")
    assert excinfo.value.reason == "metadata_malformed"


def test_refresh_keeps_last_known_good_and_audits_changes(tmp_path, sp_keys, md_server):
    idp = TestIdP(tmp_path)
    md_server.body = idp.metadata_xml()
    record = register("corp", metadata_url=md_server.url, actor="t")
    good = record.config["metadata_xml"]

    # The URL is down: keep the old copy, audit the failure.
    md_server.status = 503
    result = refresh(record, actor="t")
    assert result.error and not result.changed
    record.refresh_from_db()
    assert record.config["metadata_xml"] == good
    assert AuditEvent.objects.filter(action="idp.metadata_refresh_failed", reason="idp_unavailable").exists()

    # The URL serves garbage: same.
    md_server.status = 200
    md_server.body = b"<html>maintenance</html>"
    assert refresh(record, actor="t").error
    record.refresh_from_db()
    assert record.config["metadata_xml"] == good

    # The IdP rolls over to a new signing key: accepted, and the key change is audited.
    rolled = TestIdP(_subdir(tmp_path, "r"), entity_id=idp.entity_id, key_name="rolled")
    md_server.body = rolled.metadata_xml()
    result = refresh(record, actor="t")
    assert result.changed
    change = AuditEvent.objects.get(action="idp.metadata_changed")
    assert change.data["changes"]["signing_keys_added"] and change.data["changes"]["signing_keys_removed"]


def test_refresh_refuses_another_entity(tmp_path, sp_keys, md_server):
    md_server.body = TestIdP(tmp_path).metadata_xml()
    record = register("corp", metadata_url=md_server.url, actor="t")
    md_server.body = TestIdP(_subdir(tmp_path, "o"), entity_id="https://other.example/idp",
                             key_name="o").metadata_xml()
    assert refresh(record, actor="t").error
    record.refresh_from_db()
    assert record.config["entity_id"] != "https://other.example/idp"


def test_expired_metadata_refused_at_registration_and_disables_logins(saml):
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = etree.fromstring(saml.idp.metadata_xml())
    root.set("validUntil", past)
    xml = etree.tostring(root)
    with pytest.raises(MetadataError) as excinfo:
        register("old", metadata_xml=xml, actor="t")
    assert excinfo.value.reason == "metadata_expired"

    record = IdentityProvider.objects.get(slug="corp")
    record.config["metadata_valid_until"] = past.replace("Z", "+00:00")
    record.save()
    response = saml.client.get("/sso/corp/login/")
    assert response.status_code == 503 and b"idp_metadata_expired" in response.content


def test_refresh_command_exit_code(tmp_path, sp_keys, md_server):
    md_server.body = TestIdP(tmp_path).metadata_xml()
    register("corp", metadata_url=md_server.url, actor="t")
    call_command("idp", "refresh", "--all")
    md_server.status = 500
    with pytest.raises(CommandError):
        call_command("idp", "refresh", "corp")
