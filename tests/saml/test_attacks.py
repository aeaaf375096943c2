"""Attacks on the SAML ACS, end to end through the Django test client.

Every forged document starts from a *valid* response signed by pysaml2's own IdP (the stock
``xmlsec1`` program) and is edited with a plain lxml parser, so the attacks are the realistic
ones: the signature each wrapping attack relies on still verifies over the element it covers
(checked independently with ``cryptography``: only *where* that element sits was changed).
Each refusal must be a refusal (4xx, no redirect, no session, no ``login.succeeded``) with the
specific reason code in the ``login.failed`` audit event.
"""

from __future__ import annotations

import base64
import calendar
import copy
import hashlib
from pathlib import Path
from unittest import mock

import pytest
import saml2.server
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.test import Client
from lxml import etree
from saml2.saml import NAMEID_FORMAT_TRANSIENT
from saml2.time_util import str_to_time
from saml2.xmldsig import DIGEST_SHA1, SIG_RSA_SHA1

from broker.models import AuditEvent, FederatedIdentity
from tests.saml.conftest import SamlSetup, make_setup
from tests.saml.idp import TestIdP

pytestmark = pytest.mark.django_db

SAMLP_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"samlp": SAMLP_NS, "saml": SAML_NS, "ds": DS_NS}
EVIL = "admin"


# RSA key generation dominates set-up (SP, IdP, attacker: 2048-bit keys). Real keys are handed
# out from a pool kept for the session, in order, so keys are distinct within each test.
_KEY_POOL: dict[int, list[rsa.RSAPrivateKey]] = {}
_generate_private_key = rsa.generate_private_key


@pytest.fixture(autouse=True)
def _pooled_rsa_keys(monkeypatch):
    """Only a speed-up: every key is a real, freshly generated RSA key (once per session)."""
    handed: dict[int, int] = {}

    def generate(public_exponent: int = 65537, key_size: int = 2048, backend=None) -> rsa.RSAPrivateKey:
        pool = _KEY_POOL.setdefault(key_size, [])
        index = handed[key_size] = handed.get(key_size, -1) + 1
        while len(pool) <= index:
            pool.append(_generate_private_key(public_exponent=65537, key_size=key_size))
        return pool[index]

    monkeypatch.setattr(rsa, "generate_private_key", generate)


# -- building forged documents -------------------------------------------------------------

def parse(xml: str) -> etree._Element:
    """A plain lxml parse, as an attacker's tooling would do it."""
    return etree.fromstring(xml.encode(), parser=etree.XMLParser())


def serialize(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode")


def signature_of(element: etree._Element) -> etree._Element:
    signature = element.find("ds:Signature", NS)
    assert signature is not None, "expected a signed element"
    return signature


def unsigned(element: etree._Element) -> etree._Element:
    """A copy of ``element`` without its own (enveloped) signature: what its digest covers."""
    clone = copy.deepcopy(element)
    clone.remove(signature_of(clone))
    return clone


def set_name_id(element: etree._Element, text: str) -> None:
    name_id = element.find(".//saml:Subject/saml:NameID", NS)
    assert name_id is not None
    name_id.text = text


def genuinely_signs(signature: etree._Element, element: etree._Element, cert_file: Path) -> bool:
    """Does ``signature`` (unchanged SignedInfo) still verify over ``element`` as it now sits in
    the forged document? Checked independently of any XML-DSig library: RSA-SHA256 over the
    exclusive-c14n SignedInfo with the certificate's key, and the reference digest over the
    exclusive c14n of ``element`` minus its enveloped signature. True means the wrapping attack
    carries a genuine signature: only *where* the signed element sits was changed."""
    signed_info = signature.find("ds:SignedInfo", NS)
    reference = signed_info.find("ds:Reference", NS)
    if reference.get("URI") != f"#{element.get('ID')}":
        return False
    public_key = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_key()
    try:
        public_key.verify(base64.b64decode(signature.findtext("ds:SignatureValue", namespaces=NS)),
                          etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False),
                          padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    covered = copy.deepcopy(element)
    for enveloped in covered.findall("ds:Signature", NS):
        covered.remove(enveloped)
    canonical = etree.tostring(covered, method="c14n", exclusive=True, with_comments=False)
    digest = hashlib.sha256(canonical).digest()
    return base64.b64encode(digest).decode() == reference.findtext("ds:DigestValue", namespaces=NS)


def response_xsw(xml: str, variant: int) -> tuple[etree._Element, etree._Element, etree._Element]:
    """XSW1/XSW2 (Somorovsky et al. 2012): wrap the signed Response.

    The evil Response is a clone with a new ID and subject; it keeps the original Signature
    (whose Reference still names the original ID). The original Response, without its
    signature, goes inside that Signature (XSW1) or right before it (XSW2), where a verifier
    that resolves the reference by ID finds it. Returns (document, signature, signed element).
    """
    evil = parse(xml)
    original = unsigned(evil)
    evil.set("ID", "_evil-response")
    set_name_id(evil, EVIL)
    signature = signature_of(evil)
    if variant == 1:
        signature.append(original)
    elif variant == 2:
        signature.addprevious(original)
    else:  # pragma: no cover
        raise ValueError(variant)
    return evil, signature, original


def assertion_xsw(xml: str, variant: int, *, same_id: bool
                  ) -> tuple[etree._Element, etree._Element, etree._Element]:
    """XSW3..XSW8 (Somorovsky et al. 2012): wrap the signed Assertion of an unsigned Response.

    The evil assertion is a clone of the signed one naming ``admin``, with a new ID or the
    original's (``same_id``). XSW3: evil (unsigned) inserted before the signed original.
    XSW4: evil (unsigned) wraps the signed original. XSW5: evil carries the original's
    Signature, the unsigned original is appended to the Response. XSW6: evil carries the
    Signature, the unsigned original goes inside it. XSW7: the signed original goes into
    samlp:Extensions, the evil (unsigned) one takes its place. XSW8: evil carries the
    Signature, the unsigned original goes into a ds:Object inside it.
    Returns (document, the genuine signature, the element it covers)."""
    root = parse(xml)
    original = root.find("saml:Assertion", NS)
    signature = signature_of(original)
    evil = copy.deepcopy(original)
    if not same_id:
        evil.set("ID", "_evil-assertion")
    set_name_id(evil, EVIL)
    evil_signature = signature_of(evil)
    covered = original
    if variant == 3:
        evil.remove(evil_signature)
        original.addprevious(evil)
    elif variant == 4:
        evil.remove(evil_signature)
        root.replace(original, evil)
        evil.append(original)
    elif variant in (5, 6, 8):
        root.replace(original, evil)
        signature, covered = evil_signature, unsigned(original)
        if variant == 5:
            root.append(covered)
        elif variant == 6:
            evil_signature.append(covered)
        else:
            etree.SubElement(evil_signature, f"{{{DS_NS}}}Object").append(covered)
    elif variant == 7:
        evil.remove(evil_signature)
        extensions = etree.Element(f"{{{SAMLP_NS}}}Extensions")
        root.replace(original, evil)
        extensions.append(original)
        root.find("saml:Issuer", NS).addnext(extensions)
    else:  # pragma: no cover
        raise ValueError(variant)
    return root, signature, covered


# -- checking the outcome --------------------------------------------------------------------

def logins() -> int:
    return AuditEvent.objects.filter(action="login.succeeded").count()


def failures() -> int:
    return AuditEvent.objects.filter(action="login.failed").count()


def assert_refused(setup: SamlSetup, response, reason: str, *, status: int = 400,
                   client: Client | None = None, logins_before: int = 0, failures_before: int = 0) -> None:
    """The ACS refused: an error page (no redirect), no session, no new ``login.succeeded``,
    and exactly one new ``login.failed`` audit event, naming ``reason``."""
    assert response.status_code == status, (response.status_code, response.content[:400])
    assert not response.has_header("Location")
    assert failures() == failures_before + 1
    failed = AuditEvent.objects.filter(action="login.failed").order_by("-id").first()
    assert failed.outcome == "failure"
    assert failed.reason == reason, (failed.reason, failed.data)
    assert logins() == logins_before
    assert (client or setup.client).get("/sso/me/").status_code == 401


def assert_no_identity(subject: str) -> None:
    assert not FederatedIdentity.objects.filter(subject=subject).exists()


def post_refused(setup: SamlSetup, xml: str, relay_state: str | None, reason: str, **kwargs) -> None:
    before = failures()
    response = setup.post(xml, relay_state, client=kwargs.get("client"))
    assert_refused(setup, response, reason, failures_before=before, **kwargs)


def assert_logged_in(setup: SamlSetup, response, subject: str = "alice", location: str = "/portal/",
                     client: Client | None = None) -> None:
    assert response.status_code == 302, response.content[:1000]
    assert response["Location"] == location
    me = (client or setup.client).get("/sso/me/")
    assert me.status_code == 200
    assert me.json()["subject"] == subject


@pytest.fixture
def unsolicited(db, tmp_path, sp_keys) -> SamlSetup:
    """An IdP allowed to send IdP-initiated (unsolicited) responses."""
    return make_setup(tmp_path, slug="portal-idp", options={"allow_unsolicited": True})


def unsolicited_response(setup: SamlSetup, **kwargs) -> str:
    return setup.idp.response_xml(in_response_to=None, destination=setup.acs,
                                  sp_entity_id=setup.sp_entity_id, **kwargs)


# -- XML Signature Wrapping ----------------------------------------------------------------

# Which layer stops each variant. The received document is first validated against the SAML
# XSDs (a Response inside ds:Signature or inside another Response, an Assertion inside an
# Assertion or inside ds:Signature, and any duplicated xs:ID are invalid): ``saml_malformed``.
# A schema-valid wrapping then meets pysaml2's and the broker's checks: exactly one assertion
# (``saml_assertion_count``), a signature covering the assertion that is read
# (``saml_unsigned``), saml-core 5.4's signature profile (``invalid_signature``).
RESPONSE_XSW_EXPECTED = {1: "saml_malformed", 2: "saml_malformed"}
XSW_EXPECTED = {  # (variant, evil assertion has the original's ID) -> reason
    (3, False): "saml_assertion_count",  # two top-level assertions
    (3, True): "saml_malformed",  # duplicate xs:ID
    (4, False): "saml_malformed",  # Assertion inside an Assertion
    (4, True): "saml_malformed",
    (5, False): "saml_assertion_count",  # evil (with the signature) + the appended original
    (5, True): "saml_malformed",  # duplicate xs:ID
    (6, False): "saml_malformed",  # Assertion inside ds:Signature
    (6, True): "saml_malformed",
    (7, False): "saml_unsigned",  # samlp:Extensions may hold it; the assertion read is unsigned
    (7, True): "saml_malformed",  # duplicate xs:ID
    (8, False): "invalid_signature",  # ds:Object may hold it; the profile forbids ds:Object
    (8, True): "saml_malformed",  # duplicate xs:ID
}


@pytest.mark.parametrize("variant", sorted(RESPONSE_XSW_EXPECTED))
def test_xsw_response_signature(saml, variant):
    request, relay_state = saml.start()
    xml = saml.response_for(request, sign_response=True, sign_assertion=False)
    forged, signature, signed = response_xsw(xml, variant)
    assert genuinely_signs(signature, signed, saml.idp.cert_file)
    post_refused(saml, serialize(forged), relay_state, RESPONSE_XSW_EXPECTED[variant])
    assert_no_identity(EVIL)


@pytest.mark.parametrize(("variant", "same_id"), sorted(XSW_EXPECTED), ids=lambda v: str(v))
def test_xsw_assertion_signature(saml, variant, same_id):
    request, relay_state = saml.start()
    xml = saml.response_for(request, sign_response=False, sign_assertion=True)
    forged, signature, signed = assertion_xsw(xml, variant, same_id=same_id)
    assert genuinely_signs(signature, signed, saml.idp.cert_file)
    post_refused(saml, serialize(forged), relay_state, XSW_EXPECTED[(variant, same_id)])
    assert_no_identity(EVIL)


# -- signatures -------------------------------------------------------------------------------

def test_signatures_stripped(saml):
    """With no signature left there is nothing that fails to verify: the response is refused
    because the policy requires one (``saml_unsigned``), not as ``invalid_signature``."""
    request, relay_state = saml.start()
    root = parse(saml.response_for(request, sign_response=True, sign_assertion=True))
    for signature in list(root.iter(f"{{{DS_NS}}}Signature")):
        signature.getparent().remove(signature)
    set_name_id(root, EVIL)
    post_refused(saml, serialize(root), relay_state, "saml_unsigned")
    assert_no_identity(EVIL)


@pytest.mark.parametrize(("sign_response", "sign_assertion"), [(True, True), (True, False), (False, True)])
def test_resigned_with_attacker_key_and_keyinfo(saml, tmp_path, sign_response, sign_assertion):
    """An attacker IdP with the SAME entity ID and its own key; its signatures carry its own
    certificate in ds:KeyInfo (pysaml2 + xmlsec1 put it there). Only metadata keys count."""
    directory = tmp_path / "attacker"
    directory.mkdir()
    attacker = TestIdP(directory, entity_id=saml.idp.entity_id, key_name="attacker")
    attacker.trust_sp(sp_metadata(saml))
    request, relay_state = saml.start()
    xml = attacker.response_xml(in_response_to=request.message.id, destination=saml.acs,
                                sp_entity_id=saml.sp_entity_id, subject=EVIL,
                                sign_response=sign_response, sign_assertion=sign_assertion)
    root = parse(xml)
    for element in (root, root.find("saml:Assertion", NS)):
        if element.find("ds:Signature", NS) is not None:  # genuine, with the attacker's cert inside
            assert genuinely_signs(signature_of(element), element, attacker.cert_file)
            assert signature_of(element).find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS) is not None
    post_refused(saml, xml, relay_state, "invalid_signature")
    assert_no_identity(EVIL)


def test_comment_injected_name_id(saml):
    """The attacker's own IdP account is ``admin@corp.com.evil.com``; a comment after
    ``admin@corp.com`` keeps the signature valid (exclusive c14n drops comments). A parser
    that reads only the first text node would log in as ``admin@corp.com``."""
    request, relay_state = saml.start()
    root = parse(saml.response_for(request, subject="admin@corp.com.evil.com"))
    name_id = root.find(".//saml:Subject/saml:NameID", NS)
    name_id.text = "admin@corp.com"
    comment = etree.Comment("")
    name_id.append(comment)
    comment.tail = ".evil.com"
    forged = serialize(root)
    assert "admin@corp.com<!---->.evil.com" in forged
    for element in (root, root.find("saml:Assertion", NS)):  # comments are not signed
        assert genuinely_signs(signature_of(element), element, saml.idp.cert_file)
    response = saml.post(forged, relay_state)
    # pysaml2 reads the NameID with ElementTree, which joins the text around the comment.
    assert_logged_in(saml, response, subject="admin@corp.com.evil.com")
    assert FederatedIdentity.objects.filter(subject="admin@corp.com.evil.com").exists()
    assert_no_identity("admin@corp.com")


# -- XML parser attacks ----------------------------------------------------------------------

def _with_doctype(xml: str, doctype: str, entity_ref: str) -> str:
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    root = parse(body)
    root.find(".//saml:Subject/saml:NameID", NS).text = "ENTITY_HERE"
    return doctype + serialize(root).replace("ENTITY_HERE", entity_ref)


def test_xxe_external_entity(saml):
    request, relay_state = saml.start()
    doctype = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    xml = _with_doctype(saml.response_for(request), doctype, "&xxe;")
    post_refused(saml, xml, relay_state, "saml_doctype")


def test_billion_laughs(saml):
    request, relay_state = saml.start()
    entities = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)]
    doctype = f"<!DOCTYPE lolz [{''.join(entities)}]>"
    xml = _with_doctype(saml.response_for(request), doctype, "&lol9;")
    post_refused(saml, xml, relay_state, "saml_doctype")


def test_doctype_in_utf16(saml):
    """The DOCTYPE probe must not be dodged by re-encoding the document."""
    request, relay_state = saml.start()
    doctype = '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    xml = _with_doctype(saml.response_for(request), doctype, "&xxe;")
    data = ('<?xml version="1.0" encoding="UTF-16"?>' + xml).encode("utf-16")
    response = saml.client.post(f"/sso/{saml.slug}/saml/acs/", {
        "SAMLResponse": base64.b64encode(data).decode(), "RelayState": relay_state})
    assert_refused(saml, response, "saml_doctype")


# -- replay and binding ----------------------------------------------------------------------

def test_replay_same_relay_state_from_another_browser(saml):
    request, relay_state = saml.start()
    xml = saml.response_for(request)
    assert_logged_in(saml, saml.post(xml, relay_state))
    attacker = Client()
    post_refused(saml, xml, relay_state, "state_mismatch", client=attacker, logins_before=1)


def test_replay_same_relay_state_after_logout(saml):
    request, relay_state = saml.start()
    xml = saml.response_for(request)
    assert_logged_in(saml, saml.post(xml, relay_state))
    saml.client.logout()  # (the test client also drops its cookies)
    # The pending login was consumed by the first use: its handle is gone.
    post_refused(saml, xml, relay_state, "state_mismatch", logins_before=1)


def test_replay_under_a_fresh_pending_login(saml):
    request, relay_state = saml.start()
    xml = saml.response_for(request)
    assert_logged_in(saml, saml.post(xml, relay_state))
    saml.client.logout()
    _request2, relay_state2 = saml.start()
    # The old response answers the old AuthnRequest, not the one now pending.
    post_refused(saml, xml, relay_state2, "saml_in_response_to", logins_before=1)


def test_unsolicited_replay(unsolicited):
    xml = unsolicited_response(unsolicited)
    assert_logged_in(unsolicited, unsolicited.post(xml, None), location="/sso/me/")
    attacker = Client()
    post_refused(unsolicited, xml, None, "saml_replay", client=attacker, logins_before=1)


def test_unsolicited_refused_when_not_allowed(saml):
    xml = saml.idp.response_xml(in_response_to=None, destination=saml.acs, sp_entity_id=saml.sp_entity_id)
    post_refused(saml, xml, None, "saml_unsolicited")


def test_solicited_response_posted_as_unsolicited(unsolicited):
    """A captured answer to someone's AuthnRequest, posted without its RelayState."""
    request, _relay_state = unsolicited.start()
    xml = unsolicited.response_for(request)
    post_refused(unsolicited, xml, None, "saml_in_response_to", client=Client())


def sp_metadata(setup: SamlSetup) -> bytes:
    return setup.client.get(f"/sso/{setup.slug}/saml/metadata/").content


@pytest.fixture
def two_idps(saml, tmp_path) -> tuple[SamlSetup, SamlSetup]:
    """IdPs A (``corp``) and B (``other``), each knowing both of our SP entities (a federation)."""
    other = make_setup(tmp_path, slug="other", client=saml.client)
    saml.idp.trust_sp(sp_metadata(other))
    other.idp.trust_sp(sp_metadata(saml))
    return saml, other


def test_response_of_idp_b_posted_to_idp_a(two_idps):
    a, b = two_idps
    _request_a, relay_a = a.start()
    request_b, _relay_b = b.start()
    # B's genuine, validly signed answer to B's request, at A's ACS with A's pending login.
    post_refused(a, b.response_for(request_b, destination=a.acs, sp_entity_id=a.sp_entity_id),
                 relay_a, "invalid_signature")
    assert not FederatedIdentity.objects.exists()


def test_response_of_idp_a_posted_to_idp_b(two_idps):
    a, b = two_idps
    request_a, _relay_a = a.start()
    _request_b, relay_b = b.start()
    post_refused(b, a.response_for(request_a, destination=b.acs, sp_entity_id=b.sp_entity_id),
                 relay_b, "invalid_signature")
    assert not FederatedIdentity.objects.exists()


def test_idp_b_answers_idp_a_request(two_idps):
    """B signs a response to A's AuthnRequest ID (mix-up): A does not trust B's key."""
    a, b = two_idps
    request_a, relay_a = a.start()
    xml = b.idp.response_xml(in_response_to=request_a.message.id, destination=a.acs,
                             sp_entity_id=a.sp_entity_id)
    post_refused(a, xml, relay_a, "invalid_signature")


def test_assertion_of_idp_b_in_a_response_from_idp_a(two_idps):
    """B's genuine signed assertion (naming ``admin``, for A's SP) moved into A's genuine
    response (unsigned Response, signed assertion) to A's request."""
    a, b = two_idps
    request_a, relay_a = a.start()
    root = parse(a.response_for(request_a, sign_response=False, sign_assertion=True))
    b_root = parse(b.idp.response_xml(in_response_to=request_a.message.id, destination=a.acs,
                                      sp_entity_id=a.sp_entity_id, subject=EVIL, sign_response=False))
    b_assertion = b_root.find("saml:Assertion", NS)
    assert genuinely_signs(signature_of(b_assertion), b_assertion, b.idp.cert_file)
    root.replace(root.find("saml:Assertion", NS), b_assertion)
    post_refused(a, serialize(root), relay_a, "invalid_signature")
    assert_no_identity(EVIL)


def test_relay_state_of_another_idp(two_idps):
    """A's genuine response at A's ACS, but with the RelayState of a login pending at B."""
    a, b = two_idps
    request_a, _relay_a = a.start()
    _request_b, relay_b = b.start()
    post_refused(a, a.response_for(request_a), relay_b, "saml_in_response_to")


def test_posted_from_another_browser(saml):
    request, relay_state = saml.start()
    attacker = Client()
    post_refused(saml, saml.response_for(request), relay_state, "state_mismatch", client=attacker)
    assert not FederatedIdentity.objects.exists()


# -- audience, destination, recipient --------------------------------------------------------

def test_wrong_audience(saml):
    """A genuine response for another SP (the IdP knows it: same ACS, other entity ID)."""
    other_sp = parse(sp_metadata(saml).decode())
    other_sp.remove(signature_of(other_sp))
    other_sp.set("entityID", "https://other.example/sp")
    saml.idp.trust_sp(serialize(other_sp))
    request, relay_state = saml.start()
    xml = saml.response_for(request, sp_entity_id="https://other.example/sp")
    assert parse(xml).findtext(".//saml:Audience", namespaces=NS) == "https://other.example/sp"
    post_refused(saml, xml, relay_state, "saml_audience")


def test_wrong_destination(saml):
    request, relay_state = saml.start()
    xml = saml.response_for(request, destination="https://other.example/acs")
    post_refused(saml, xml, relay_state, "saml_destination")


def test_wrong_recipient(saml):
    """Right Destination, wrong SubjectConfirmationData/@Recipient. pysaml2's IdP takes the
    Recipient from the ACS URL (``Server.update_farg``): patch that seam at the IdP only."""
    original = saml2.server.Server.update_farg

    def update_farg(in_response_to, consumer_url, farg=None):
        return original(in_response_to, "https://other.example/acs", farg)

    request, relay_state = saml.start()
    with mock.patch.object(saml2.server.Server, "update_farg", staticmethod(update_farg)):
        xml = saml.response_for(request)
    root = parse(xml)
    assert root.get("Destination") == saml.acs
    data = root.find(".//saml:SubjectConfirmationData", NS)
    assert data.get("Recipient") == "https://other.example/acs"
    post_refused(saml, xml, relay_state, "saml_destination")


# -- validity window -------------------------------------------------------------------------

def _window(xml: str) -> tuple[int, int]:
    conditions = parse(xml).find(".//saml:Conditions", NS)
    return (calendar.timegm(str_to_time(conditions.get("NotBefore"))),
            calendar.timegm(str_to_time(conditions.get("NotOnOrAfter"))))


def _post_at(setup: SamlSetup, xml: str, relay_state: str, sp_clock: int):
    """Fault injection: the SP's clock, as pysaml2's validity checks read it, is ``sp_clock``."""
    with mock.patch("saml2.time_util.utc_now", return_value=sp_clock):
        return setup.post(xml, relay_state)


@pytest.mark.parametrize(("offset", "reason"), [(+1, "token_expired"), (-1, None)])
def test_not_on_or_after_with_skew(saml, settings, offset, reason):
    skew = settings.CLOCK_SKEW_SECONDS
    request, relay_state = saml.start()
    xml = saml.response_for(request)
    not_before, not_on_or_after = _window(xml)
    assert not_on_or_after - not_before == 300  # the IdP policy's 5-minute lifetime
    response = _post_at(saml, xml, relay_state, not_on_or_after + skew + offset)
    if reason:
        assert_refused(saml, response, reason)
    else:
        assert_logged_in(saml, response)


@pytest.mark.parametrize(("offset", "reason"), [(-1, "token_not_yet_valid"), (+1, None)])
def test_not_before_with_skew(saml, settings, offset, reason):
    skew = settings.CLOCK_SKEW_SECONDS
    request, relay_state = saml.start()
    xml = saml.response_for(request)
    not_before, _not_on_or_after = _window(xml)
    response = _post_at(saml, xml, relay_state, not_before - skew + offset)
    if reason:
        assert_refused(saml, response, reason)
    else:
        assert_logged_in(saml, response)


# -- assertion count, algorithms, encryption -----------------------------------------------

def test_second_unsigned_assertion(saml):
    request, relay_state = saml.start()
    root = parse(saml.response_for(request, sign_response=False, sign_assertion=True))
    original = root.find("saml:Assertion", NS)
    extra = unsigned(original)
    extra.set("ID", "_second-assertion")
    set_name_id(extra, EVIL)
    original.addnext(extra)
    post_refused(saml, serialize(root), relay_state, "saml_assertion_count")
    assert_no_identity(EVIL)


def test_sha1_from_modern_idp(saml):
    request, relay_state = saml.start()
    xml = saml.response_for(request, sign_alg=SIG_RSA_SHA1, digest_alg=DIGEST_SHA1)
    post_refused(saml, xml, relay_state, "saml_weak_algorithm")


def test_sha1_from_legacy_idp(db, tmp_path, sp_keys):
    legacy = make_setup(tmp_path, slug="legacy", legacy_crypto=True)
    response = legacy.login(sign_alg=SIG_RSA_SHA1, digest_alg=DIGEST_SHA1)
    assert_logged_in(legacy, response)


def test_unsigned_encrypted_assertion(saml, sp_keys):
    """Encryption is not integrity: anyone can encrypt to our public certificate."""
    request, relay_state = saml.start()
    xml = saml.response_for(request, encrypt_cert=sp_keys.cert_pem, sign_response=False,
                            sign_assertion=False, subject=EVIL)
    assert "EncryptedAssertion" in xml
    post_refused(saml, xml, relay_state, "saml_unsigned")
    assert_no_identity(EVIL)


def test_3des_encrypted_assertion_from_modern_idp(saml, sp_keys):
    saml.idp.data_encryption = "des-192"
    request, relay_state = saml.start()
    xml = saml.response_for(request, encrypt_cert=sp_keys.cert_pem, sign_response=False, sign_assertion=True)
    assert "xmlenc#tripledes-cbc" in xml
    post_refused(saml, xml, relay_state, "saml_weak_algorithm")


# -- transport, redirects, principal ---------------------------------------------------------

def test_oversized_body(saml, settings):
    settings.SAML_MAX_POST_BYTES = 2048
    request, relay_state = saml.start()
    post_refused(saml, saml.response_for(request), relay_state, "saml_too_large", status=413)


def test_next_to_another_site_is_dropped(saml):
    request, relay_state = saml.start(next_url="https://evil.com/")
    assert_logged_in(saml, saml.post(saml.response_for(request), relay_state), location="/sso/me/")


def test_unsolicited_relay_state_to_another_site(unsolicited):
    response = unsolicited.post(unsolicited_response(unsolicited), "https://evil.com")
    assert_logged_in(unsolicited, response, location="/sso/me/")


def test_transient_name_id(saml):
    request, relay_state = saml.start()
    xml = saml.response_for(request, name_id_format=NAMEID_FORMAT_TRANSIENT)
    post_refused(saml, xml, relay_state, "invalid_principal")
    assert not FederatedIdentity.objects.exists()

