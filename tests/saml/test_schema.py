"""libxml2 schema validation (broker.protocols.saml.schema) against pysaml2's own validator
(``saml2.xml.schema.validate``, pure-Python ``xmlschema``): both must give the same verdict on
every document, valid or not. Real documents come from pysaml2 (an IdP and an SP); no database.
"""

from __future__ import annotations

import base64
import copy
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import saml2.sigver
import saml2.xml.schema
from lxml import etree
from saml2 import BINDING_HTTP_POST, samlp
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.sigver import get_xmlsec_binary
from saml2.xml.schema import XMLSchemaError

from broker.protocols.saml import schema
from tests.saml.idp import TestIdP, make_keypair

P = "urn:oasis:names:tc:SAML:2.0:protocol"
A = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SP_ID, ACS = "https://sp.example/metadata", "https://sp.example/acs"
RESPONSE, ASSERTION = "signed response", "assertion as pysaml2 re-serialises it"


@dataclass
class Docs:
    idp: TestIdP
    sp: SPConfig
    response: str
    valid: dict[str, str | bytes]


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Docs:
    directory = tmp_path_factory.mktemp("schema")
    idp = TestIdP(directory)
    key, cert = make_keypair(directory, "sp")
    sp = SPConfig()
    sp.load({
        "entityid": SP_ID, "key_file": str(key), "cert_file": str(cert),
        "encryption_keypairs": [{"key_file": str(key), "cert_file": str(cert)}],
        "service": {"sp": {"endpoints": {"assertion_consumer_service": [(ACS, BINDING_HTTP_POST)]},
                           "allow_unsolicited": True}},
        "metadata": {"inline": [idp.metadata_xml().decode()]},
        "xmlsec_binary": get_xmlsec_binary(), "crypto_backend": "xmlsec1",
    })
    sp_metadata = create_metadata_string(None, config=sp, sign=False)
    idp.trust_sp(sp_metadata)
    response = idp.response_xml(in_response_to="id-request", destination=ACS, sp_entity_id=SP_ID)
    parsed = samlp.response_from_string(response)
    _, authn_request = Saml2Client(config=sp).create_authn_request(f"{idp.entity_id}/sso/post")
    name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text="alice")
    _, logout_request = idp.server.create_logout_request(f"{ACS}/slo", SP_ID, name_id=name_id, sign=True)
    valid: dict[str, str | bytes] = {
        RESPONSE: response,
        "response as pysaml2 re-serialises it": str(parsed),
        ASSERTION: str(parsed.assertion[0]),
        "response with encrypted assertion": idp.response_xml(
            in_response_to="id-request", destination=ACS, sp_entity_id=SP_ID, encrypt_cert=cert.read_text()),
        "authn request": str(authn_request),
        "signed logout request": str(logout_request),
        "idp metadata (bytes)": idp.metadata_xml(),
        "sp metadata": sp_metadata,
    }
    return Docs(idp=idp, sp=sp, response=response, valid=valid)


def verdict(validator: Callable[[str | bytes], None], doc: str | bytes) -> bool:
    try:
        validator(doc)
    except XMLSchemaError:
        return False
    return True


def mutate(doc: str | bytes, change: Callable[[etree._Element], object]) -> str:
    root = etree.fromstring(doc.encode() if isinstance(doc, str) else doc)
    change(root)
    return etree.tostring(root, encoding="unicode")


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def assertion(root: etree._Element) -> etree._Element:
    return root if root.tag == q(A, "Assertion") else root.find(q(A, "Assertion"))


def drop(attribute: str, pick: Callable[[etree._Element], etree._Element] = lambda r: r):
    return lambda root: pick(root).attrib.pop(attribute)


def twice_signed_info(root: etree._Element) -> None:
    signed_info = root.find(f"{q(DS, 'Signature')}/{q(DS, 'SignedInfo')}")
    signed_info.addnext(copy.deepcopy(signed_info))


def status(root: etree._Element) -> etree._Element:
    return root.find(q(P, "Status"))


# case -> (base document, change): a document both validators must refuse.
INVALID: dict[str, tuple[str, Callable[[etree._Element], object]]] = {
    "foreign element in Assertion": (RESPONSE, lambda r: assertion(r).append(etree.Element("{urn:x}Foo"))),
    "unknown saml element in Assertion": (RESPONSE, lambda r: assertion(r).append(etree.Element(q(A, "X")))),
    "Response without ID": (RESPONSE, drop("ID")),
    "Response without Version": (RESPONSE, drop("Version")),
    "Response without IssueInstant": (RESPONSE, drop("IssueInstant")),
    "Assertion without ID": (RESPONSE, drop("ID", assertion)),
    "Assertion without Version": (ASSERTION, drop("Version")),
    "Assertion without IssueInstant": (ASSERTION, drop("IssueInstant")),
    "IssueInstant=yesterday": (RESPONSE, lambda r: r.set("IssueInstant", "yesterday")),
    "AuthnRequest IssueInstant=yesterday": ("authn request", lambda r: r.set("IssueInstant", "yesterday")),
    "month 13 in NotOnOrAfter": (RESPONSE, lambda r: assertion(r).find(q(A, "Conditions")).set(
        "NotOnOrAfter", "2030-13-01T00:00:00Z")),
    "ID not an NCName": (RESPONSE, lambda r: r.set("ID", "1-starts-with-a-digit")),
    "duplicate ID": (RESPONSE, lambda r: assertion(r).set("ID", r.get("ID"))),
    "unknown attribute on Response": (RESPONSE, lambda r: r.set("Bogus", "1")),
    "Issuer after Status": (RESPONSE, lambda r: status(r).addnext(r.find(q(A, "Issuer")))),
    "Subject before Issuer in Assertion": (ASSERTION, lambda r: r.insert(0, r.find(q(A, "Subject")))),
    "Signature with two SignedInfo": (RESPONSE, twice_signed_info),
    "text in Status (element-only)": (RESPONSE, lambda r: setattr(status(r), "text", "junk")),
    "text between Response children": (RESPONSE, lambda r: setattr(r.find(q(A, "Issuer")), "tail", "x")),
    "Status without StatusCode": (RESPONSE, lambda r: status(r).remove(status(r).find(q(P, "StatusCode")))),
    "xsi:type=integer on a text AttributeValue": (RESPONSE, lambda r: assertion(r).find(
        f".//{q(A, 'AttributeValue')}").set(q(XSI, "type"), "xs:integer")),
    "LogoutRequest without NameID": ("signed logout request", lambda r: r.remove(r.find(q(A, "NameID")))),
    "EntityDescriptor without entityID": ("idp metadata (bytes)", drop("entityID")),
}


def test_valid_documents_are_accepted_by_both(docs):
    for name, doc in docs.valid.items():
        assert verdict(saml2.xml.schema.validate, doc), name  # the reference accepts it...
        assert verdict(schema.validate, doc), name  # ...and so do we


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_documents_are_refused_by_both(docs, case):
    base, change = INVALID[case]
    doc = mutate(docs.valid[base], change)
    assert not verdict(saml2.xml.schema.validate, doc), "the reference validator accepts it"
    assert not verdict(schema.validate, doc)


@pytest.mark.parametrize("doc", [
    f'<saml:Bogus xmlns:saml="{A}"/>',  # unknown element in the saml namespace, as the root
    "<a><b></a>",  # not even XML
    "plain text",
])
def test_not_saml_is_refused_by_both(doc):
    assert not verdict(saml2.xml.schema.validate, doc)
    assert not verdict(schema.validate, doc)


def test_error_is_pysaml2s_and_names_the_problem(docs):
    doc = mutate(docs.response, lambda r: r.set("IssueInstant", "yesterday"))
    with pytest.raises(saml2.xml.schema.XMLSchemaError) as caught:
        schema.validate(doc)
    assert caught.value.args[0]["doc"] == doc
    assert "IssueInstant" in caught.value.args[0]["error"] and "yesterday" in caught.value.args[0]["error"]


def test_input_kinds(docs):
    root = etree.fromstring(docs.response.encode())
    schema.validate(docs.response.encode())
    schema.validate(root)
    schema.validate(assertion(root))  # a subtree is validated as a document of its own
    assertion(root).append(etree.Element(q(A, "Bogus")))
    with pytest.raises(XMLSchemaError):
        schema.validate(assertion(root))
    # Decoded text is read as text, whatever encoding its declaration names (lxml refuses one on str).
    text = str(samlp.response_from_string(docs.response)).replace("Alice", "Zoë")
    assert "Zoë" in text
    schema.validate('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + text)


def test_install_replaces_pysaml2s_validator_and_uninstall_restores(docs, monkeypatch):
    was_installed = schema.installed()
    schema.uninstall()  # the broker installs it when it builds a SAML client
    original = saml2.sigver.validate_doc_with_schema
    assert original is saml2.xml.schema.validate
    bad = mutate(docs.response, drop("Version"))
    try:
        schema.install()
        schema.install()  # idempotent
        assert saml2.sigver.validate_doc_with_schema is schema.validate_doc_with_schema
        # The pure-Python validator must not run any more.
        monkeypatch.setattr(saml2.xml.schema._schema_validator_default, "validate",
                            lambda *a, **k: pytest.fail("xmlschema was used"))
        with pytest.raises(XMLSchemaError):
            saml2.sigver.validate_doc_with_schema(bad)
        saml2.sigver.validate_doc_with_schema(docs.response)
        monkeypatch.undo()
    finally:
        schema.uninstall()
    assert saml2.sigver.validate_doc_with_schema is original
    schema.uninstall()  # harmless when not installed
    assert saml2.sigver.validate_doc_with_schema is original
    if was_installed:
        schema.install()


def test_installed_validator_runs_in_pysaml2s_signature_checks(docs, monkeypatch):
    seen: list[str] = []
    real = schema.validate
    monkeypatch.setattr(schema, "validate", lambda doc: (seen.append(etree.QName(
        etree.fromstring(doc.encode())).localname), real(doc))[1])
    client = Saml2Client(config=docs.sp)
    encoded = base64.b64encode(docs.response.encode()).decode()
    schema.install()
    try:
        parsed = client.parse_authn_request_response(encoded, BINDING_HTTP_POST,
                                                     outstanding={"id-request": "/"})
    finally:
        schema.uninstall()
    assert parsed.name_id.text == "alice"
    assert seen == ["Response", "Assertion"]


def test_concurrent_validation_reports_each_documents_own_errors(docs):
    bad = {f"Bogus{i}": mutate(docs.response, lambda r, i=i: r.set(f"Bogus{i}", "1")) for i in range(8)}

    def check(item: tuple[str, str]) -> bool:
        name, doc = item
        for _ in range(25):
            schema.validate(docs.response)
            with pytest.raises(XMLSchemaError) as caught:
                schema.validate(doc)
            errors = caught.value.args[0]["error"]
            assert name in errors and errors.count("Bogus") == errors.count(name)
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, bad.items()))


def test_schema_is_compiled_once_under_concurrency(monkeypatch):
    monkeypatch.setattr(schema, "_schema", None)
    barrier = threading.Barrier(8)

    def get() -> etree.XMLSchema:
        barrier.wait()
        return schema.get_schema()

    with ThreadPoolExecutor(8) as pool:
        compiled = list(pool.map(lambda _: get(), range(8)))
    assert all(c is compiled[0] for c in compiled)


@pytest.fixture
def listener():
    """A local port that records any connection attempt (libxml2 connects from C, not via Python)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_listener_does_see_connections(listener):
    socket.create_connection(listener.getsockname(), timeout=1).close()
    time.sleep(0.05)
    assert connected(listener)


def test_schema_location_hints_in_documents_are_never_fetched(docs, listener, monkeypatch):
    calls: list[str | None] = []
    resolve = schema.BundledSchemaResolver.resolve
    monkeypatch.setattr(schema.BundledSchemaResolver, "resolve",
                        lambda self, url, pub, ctx: (calls.append(url), resolve(self, url, pub, ctx))[1])
    port = listener.getsockname()[1]
    hints = (f'xsi:schemaLocation="{P} http://127.0.0.1:{port}/evil.xsd {A} http://127.0.0.1:9/evil.xsd" '
             f'xsi:noNamespaceSchemaLocation="http://127.0.0.1:{port}/nons.xsd" ')
    hinted = docs.response.replace(f'xmlns:xsi="{XSI}" ', f'xmlns:xsi="{XSI}" {hints}', 1)
    assert hinted != docs.response
    schema.validate(hinted)  # verdict from the bundled schemas...
    with pytest.raises(XMLSchemaError):
        schema.validate(hinted.replace('Version="2.0"', 'Version="2.0" Bogus="1"', 1))
    assert not connected(listener)  # ...without any connection attempt
    assert calls == []  # nothing was even asked of the resolver


def test_resolver_maps_published_xsd_urls_to_bundled_files_and_refuses_others(listener):
    calls: list[str] = []

    class Spy(schema.BundledSchemaResolver):
        def resolve(self, url, public_id, context):
            calls.append(url)
            return super().resolve(url, public_id, context)

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(Spy())
    # Compiled on its own, the metadata XSD imports xmldsig, xenc and xml.xsd by their w3.org URLs.
    metadata_xsd = etree.parse(str(schema.SCHEMA_DIR / "saml-schema-metadata-2.0.xsd"), parser)
    etree.XMLSchema(metadata_xsd)
    assert set(schema.REMOTE_LOCATIONS) - {"http://www.w3.org/2009/01/xml.xsd",
                                          "http://schemas.xmlsoap.org/soap/envelope/"} <= set(calls)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/evil.xsd"
    evil = etree.fromstring(f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t">'
                            f'<xs:import namespace="urn:evil" schemaLocation="{url}"/></xs:schema>', parser)
    with pytest.raises(etree.XMLSchemaParseError):
        etree.XMLSchema(evil)
    assert url in calls
    assert not connected(listener)


def test_every_schema_location_in_the_bundle_is_known():
    locations = set()
    for path in Path(schema.SCHEMA_DIR).glob("*.xsd"):
        for node in etree.parse(str(path), etree.XMLParser(load_dtd=False, no_network=True)).iter():
            if isinstance(node.tag, str) and node.get("schemaLocation"):
                locations.add(node.get("schemaLocation"))
    remote = {location for location in locations if "://" in location}
    assert remote <= set(schema.REMOTE_LOCATIONS)
    assert {location for location in locations if "://" not in location} <= {
        p.name for p in Path(schema.SCHEMA_DIR).glob("*.xsd")}
