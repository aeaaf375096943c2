"""The in-process crypto backend against an independent implementation: every signed or
encrypted document here is produced by the ``xmlsec1`` program (pysaml2's stock backend or
the CLI directly) or by hand with ``cryptography``, never by the code under test."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from lxml import etree
from saml2 import BINDING_HTTP_POST, class_name, saml, samlp
from saml2 import xmlenc as xenc
from saml2.config import SPConfig
from saml2.sigver import (
    CryptoBackendXmlSec1,
    DecryptError,
    SignatureError,
    get_xmlsec_binary,
    pre_encryption_part,
    pre_signature_part,
    security_context,
)
from saml2.xmldsig import (
    DIGEST_SHA1,
    DIGEST_SHA256,
    SIG_ECDSA_SHA256,
    SIG_RSA_SHA1,
    SIG_RSA_SHA256,
    TRANSFORM_C14N,
    TRANSFORM_ENVELOPED,
)

from broker.protocols.saml.crypto import (
    BadStructure,
    InProcessCryptoBackend,
    Refused,
    UnsafeXml,
    WeakAlgorithm,
)

RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
AES128_CBC = f"{XENC}aes128-cbc"
AES256_GCM = f"{XENC11}aes256-gcm"
TRIPLEDES = f"{XENC}tripledes-cbc"
OAEP_MGF1P = f"{XENC}rsa-oaep-mgf1p"
RSA_1_5 = f"{XENC}rsa-1_5"

STOCK = CryptoBackendXmlSec1(get_xmlsec_binary())


# -- keys and documents -------------------------------------------------------------------------

@dataclass
class Pki:
    dir: Path

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def crt(self, name: str) -> str:
        return str(self.dir / f"{name}.crt")

    def b64(self, name: str) -> str:
        return "".join(line for line in Path(self.crt(name)).read_text().splitlines() if "-----" not in line)

    def public_key(self, name: str) -> rsa.RSAPublicKey:
        return x509.load_pem_x509_certificate(Path(self.crt(name)).read_bytes()).public_key()


def _write_pair(directory: Path, name: str, key) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    for name in ("idp", "evil", "sp"):
        _write_pair(directory, name, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    _write_pair(directory, "ec", ec.generate_private_key(ec.SECP256R1()))
    return Pki(directory)


def template(pki: Pki, ident: str, *, signer: str = "idp", sign_alg: str = SIG_RSA_SHA256,
             digest_alg: str = DIGEST_SHA256) -> str:
    """pysaml2's own signature template, as its IdP puts it into what it signs."""
    part = pre_signature_part(ident, public_key=pki.b64(signer), sign_alg=sign_alg, digest_alg=digest_alg)
    return str(part).split("?>", 1)[-1]


def custom_template(uri: str, *, sign_alg: str = SIG_RSA_SHA256, transforms: str | None = None,
                    extra_reference: str = "", extra: str = "", c14n: str = TRANSFORM_C14N) -> str:
    """A hand-written template for the shapes pysaml2 would never produce."""
    transforms = transforms or (f'<ds:Transform Algorithm="{TRANSFORM_ENVELOPED}"/>'
                                f'<ds:Transform Algorithm="{TRANSFORM_C14N}"/>')
    reference = (f'<ds:Reference URI="{uri}"><ds:Transforms>{transforms}</ds:Transforms>'
                 f'<ds:DigestMethod Algorithm="{DIGEST_SHA256}"/><ds:DigestValue/></ds:Reference>')
    return (f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>'
            f'<ds:CanonicalizationMethod Algorithm="{c14n}"/>'
            f'<ds:SignatureMethod Algorithm="{sign_alg}"/>{reference}{extra_reference}</ds:SignedInfo>'
            f'<ds:SignatureValue/>{extra}</ds:Signature>')


NAMESPACES = (f'xmlns:saml="{SAML}" xmlns:xs="http://www.w3.org/2001/XMLSchema" '
              'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"')


def response_xml(*, response_sig: str = "", assertion_sig: str = "", attributes: int = 30,
                 extra_assertion: str = "", self_contained: bool = True) -> str:
    """A Response; a self-contained Assertion declares its namespaces itself, as OpenSAML-based
    IdPs (Shibboleth) do; an encrypted one must (see test_not_self_contained_...)."""
    values = "".join(
        f'<saml:Attribute Name="attr{i}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">'
        f'<saml:AttributeValue xsi:type="xs:string">value-{i}-{"x" * 60}</saml:AttributeValue>'
        '</saml:Attribute>'
        for i in range(attributes))
    return (
        f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" {NAMESPACES} ID="_resp1" '
        'Version="2.0" IssueInstant="2024-01-01T00:00:00Z" Destination="https://sp.test/acs">'
        f'<saml:Issuer>https://idp.test</saml:Issuer>{response_sig}'
        '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
        f'<saml:Assertion {NAMESPACES if self_contained else ""} ID="_a1" Version="2.0" '
        'IssueInstant="2024-01-01T00:00:00Z">'
        f'<saml:Issuer>https://idp.test</saml:Issuer>{assertion_sig}'
        '<saml:Subject><saml:NameID>alice</saml:NameID></saml:Subject>'
        f'<saml:AttributeStatement>{values}</saml:AttributeStatement></saml:Assertion>{extra_assertion}'
        '</samlp:Response>')


def stock_sign(xml: str, node_name: str, node_id: str, key: str) -> str:
    return STOCK.sign_statement(xml, node_name, key, node_id)


def cli_sign(xml: str, node_id: str, key_args: list[str], tmp_path: Path) -> str:
    """Sign with the xmlsec1 program directly (for keys pysaml2 cannot pass, e.g. HMAC)."""
    source, output = tmp_path / "in.xml", tmp_path / "out.xml"
    source.write_text(xml)
    subprocess.run([get_xmlsec_binary(), "--sign", *key_args, "--id-attr:ID", ASSERTION, "--node-id", node_id,
                    "--output", str(output), str(source)], check=True, capture_output=True)
    return output.read_text()


@pytest.fixture(scope="module")
def signed(pki) -> str:
    """A Response whose Assertion and then Response are signed by pysaml2's stock backend."""
    xml = response_xml(response_sig=template(pki, "_resp1"), assertion_sig=template(pki, "_a1"))
    xml = stock_sign(xml, ASSERTION, "_a1", pki.key("idp"))
    return stock_sign(xml, RESPONSE, "_resp1", pki.key("idp"))


def refusal(exc_info) -> str:
    assert isinstance(exc_info.value, Refused), repr(exc_info.value)
    return exc_info.value.code


def validate(xml: str | bytes, cert: str, node_name: str = ASSERTION, node_id: str = "_a1", *,
             legacy: bool = False) -> bool:
    backend = InProcessCryptoBackend(allow_legacy=legacy)
    return backend.validate_signature(xml, cert, "pem", node_name, node_id)


# -- signatures ---------------------------------------------------------------------------------

def test_signed_response_and_assertion_verify(pki, signed):
    backend = InProcessCryptoBackend()
    assert backend.validate_signature(signed, pki.crt("idp"), "pem", RESPONSE, "_resp1") is True
    assert backend.validate_signature(signed.encode(), pki.crt("idp"), "pem", ASSERTION, "_a1") is True


def test_signed_assertion_alone_verifies_also_with_der_cert(pki, tmp_path):
    xml = stock_sign(response_xml(assertion_sig=template(pki, "_a1")), ASSERTION, "_a1", pki.key("idp"))
    der = tmp_path / "idp.der"
    der.write_bytes(x509.load_pem_x509_certificate(Path(pki.crt("idp")).read_bytes())
                    .public_bytes(serialization.Encoding.DER))
    backend = InProcessCryptoBackend()
    assert backend.validate_signature(xml, pki.crt("idp"), "pem", ASSERTION, "_a1")
    assert backend.validate_signature(xml, str(der), "der", ASSERTION, "_a1")
    with pytest.raises(SignatureError):  # the Response itself is not signed
        backend.validate_signature(xml, pki.crt("idp"), "pem", RESPONSE, "_resp1")


def test_ecdsa_signature_verifies(pki):
    xml = response_xml(assertion_sig=template(pki, "_a1", signer="ec", sign_alg=SIG_ECDSA_SHA256))
    xml = stock_sign(xml, ASSERTION, "_a1", pki.key("ec"))
    backend = InProcessCryptoBackend()
    assert backend.validate_signature(xml, pki.crt("ec"), "pem", ASSERTION, "_a1")
    with pytest.raises(SignatureError):
        backend.validate_signature(xml, pki.crt("idp"), "pem", ASSERTION, "_a1")


def test_tampered_text_fails_and_cache_does_not_leak(pki, signed):
    tampered = signed.replace("value-3-", "value-3X", 1)
    assert tampered != signed
    backend = InProcessCryptoBackend()
    assert backend.validate_signature(signed, pki.crt("idp"), "pem", ASSERTION, "_a1")
    for node_name, node_id in ((ASSERTION, "_a1"), (RESPONSE, "_resp1")):
        with pytest.raises(SignatureError):
            backend.validate_signature(tampered, pki.crt("idp"), "pem", node_name, node_id)
    assert backend.validate_signature(signed, pki.crt("idp"), "pem", RESPONSE, "_resp1")


def test_wrong_cert_fails(pki, signed):
    with pytest.raises(SignatureError):
        InProcessCryptoBackend().validate_signature(signed, pki.crt("evil"), "pem", ASSERTION, "_a1")


def test_keyinfo_in_the_document_is_never_used(pki, signed):
    """An attacker re-signs with their own key and ships their certificate in KeyInfo."""
    forged = signed.replace("<saml:NameID>alice<", "<saml:NameID>admin<")
    root = etree.fromstring(forged.encode())
    for signature in root.iter(f"{{{DS}}}Signature"):
        signature.getparent().remove(signature)
    xml = etree.tostring(root).decode()
    xml = xml.replace("<saml:Issuer>https://idp.test</saml:Issuer><saml:Subject>",
                      f"<saml:Issuer>https://idp.test</saml:Issuer>{template(pki, '_a1', signer='evil')}"
                      "<saml:Subject>")
    xml = stock_sign(xml, ASSERTION, "_a1", pki.key("evil"))
    assert pki.b64("evil")[:40] in xml  # the attacker's certificate is in ds:KeyInfo
    backend = InProcessCryptoBackend()
    assert backend.validate_signature(xml, pki.crt("evil"), "pem", ASSERTION, "_a1")  # well-formed forgery
    with pytest.raises(SignatureError):
        backend.validate_signature(xml, pki.crt("idp"), "pem", ASSERTION, "_a1")


def test_hmac_signature_is_refused(pki, tmp_path):
    """Key confusion: the IdP's public certificate used as the HMAC secret."""
    hmac_key = tmp_path / "hmac.bin"
    hmac_key.write_bytes(Path(pki.crt("idp")).read_bytes())
    xml = response_xml(assertion_sig=custom_template(
        "#_a1", sign_alg="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"))
    xml = cli_sign(xml, "_a1", ["--hmackey", str(hmac_key)], tmp_path)
    with pytest.raises(WeakAlgorithm) as exc_info:
        validate(xml, pki.crt("idp"), legacy=True)
    assert refusal(exc_info) == "weak_algorithm"


def test_sha1_refused_unless_legacy(pki):
    xml = response_xml(assertion_sig=template(pki, "_a1", sign_alg=SIG_RSA_SHA1, digest_alg=DIGEST_SHA1))
    xml = stock_sign(xml, ASSERTION, "_a1", pki.key("idp"))
    with pytest.raises(WeakAlgorithm) as exc_info:
        validate(xml, pki.crt("idp"))
    assert refusal(exc_info) == "weak_algorithm"
    assert validate(xml, pki.crt("idp"), legacy=True)


def test_sha1_digest_alone_refused_unless_legacy(pki):
    xml = response_xml(assertion_sig=template(pki, "_a1", sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA1))
    xml = stock_sign(xml, ASSERTION, "_a1", pki.key("idp"))
    with pytest.raises(WeakAlgorithm) as exc_info:
        validate(xml, pki.crt("idp"))
    assert refusal(exc_info) == "weak_algorithm"
    assert validate(xml, pki.crt("idp"), legacy=True)


OTHER_ASSERTION = ('<saml:Assertion ID="_other" Version="2.0" IssueInstant="2024-01-01T00:00:00Z">'
                   '<saml:Issuer>https://idp.test</saml:Issuer></saml:Assertion>')
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"

STRUCTURE_CASES = {
    "two references": dict(extra_reference=(
        f'<ds:Reference URI="#_other"><ds:Transforms><ds:Transform Algorithm="{TRANSFORM_C14N}"/>'
        f'</ds:Transforms><ds:DigestMethod Algorithm="{DIGEST_SHA256}"/><ds:DigestValue/></ds:Reference>')),
    "reference to another element": dict(uri="#_other"),
    "xpath transform": dict(transforms=(
        f'<ds:Transform Algorithm="{TRANSFORM_ENVELOPED}"/><ds:Transform Algorithm="{XPATH}">'
        '<ds:XPath>not(ancestor-or-self::ds:Signature)</ds:XPath></ds:Transform>')),
    "inclusive c14n": dict(c14n="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"),
    "three transforms": dict(transforms=(
        f'<ds:Transform Algorithm="{TRANSFORM_ENVELOPED}"/><ds:Transform Algorithm="{TRANSFORM_C14N}"/>'
        f'<ds:Transform Algorithm="{TRANSFORM_C14N}"/>')),
    "ds:Object": dict(extra='<ds:Object Id="obj"><saml:NameID>admin</saml:NameID></ds:Object>'),
}


@pytest.mark.parametrize("case", list(STRUCTURE_CASES))
def test_signature_profile_violations_are_refused(pki, tmp_path, case):
    options = dict(STRUCTURE_CASES[case])
    sig = custom_template(options.pop("uri", "#_a1"), **options)
    xml = response_xml(assertion_sig=sig, extra_assertion=OTHER_ASSERTION)
    xml = cli_sign(xml, "_a1", ["--privkey-pem", pki.key("idp")], tmp_path)
    # The xmlsec1 program itself accepts each of these: only our profile checks stop them.
    subprocess.run([get_xmlsec_binary(), "--verify", "--pubkey-cert-pem", pki.crt("idp"), "--id-attr:ID",
                    ASSERTION, "--node-id", "_a1", str(tmp_path / "out.xml")],
                   check=True, capture_output=True)
    with pytest.raises(BadStructure) as exc_info:
        validate(xml, pki.crt("idp"), legacy=True)
    assert refusal(exc_info) == "signature_structure"


def _wrap_in_extensions(root: etree._Element, assertion: etree._Element) -> None:
    """XSW: keep the signed original hidden in Extensions, show a forged copy."""
    extensions = etree.Element("{urn:oasis:names:tc:SAML:2.0:protocol}Extensions")
    root.insert(1, extensions)
    extensions.append(copy.deepcopy(assertion))
    assertion.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID").text = "admin"


def _xml_id_twin(root: etree._Element, assertion: etree._Element) -> None:
    root.find(f"{{{SAML}}}Issuer").set("{http://www.w3.org/XML/1998/namespace}id", "_a1")


@pytest.mark.parametrize("attack", [_wrap_in_extensions, _xml_id_twin])
def test_duplicate_ids_are_refused(pki, signed, attack):
    root = etree.fromstring(signed.encode())
    attack(root, root.find(f"{{{SAML}}}Assertion"))
    with pytest.raises(BadStructure) as exc_info:
        validate(etree.tostring(root), pki.crt("idp"))
    assert refusal(exc_info) == "duplicate_id"


@pytest.mark.parametrize(("doctype", "name_id"), [
    ('<!DOCTYPE samlp:Response [<!ENTITY x "alice">]>', "&x;"),
    ('<!DOCTYPE samlp:Response [<!ENTITY x SYSTEM "file:///etc/hostname">]>', "&x;"),
    ('<!DOCTYPE samlp:Response SYSTEM "http://127.0.0.1:9/evil.dtd">', "alice"),
])
def test_doctype_is_refused(pki, signed, doctype, name_id):
    body = signed.replace('<?xml version="1.0"?>', "").lstrip()
    xml = doctype + body.replace("<saml:NameID>alice<", f"<saml:NameID>{name_id}<")
    with pytest.raises(UnsafeXml) as exc_info:
        validate(xml, pki.crt("idp"))
    assert refusal(exc_info) == "xml_doctype"
    with pytest.raises(UnsafeXml) as exc_info:
        InProcessCryptoBackend().decrypt(xml, pki.key("sp"))
    assert refusal(exc_info) == "xml_doctype"


def test_missing_node_id_and_wrong_node_type_are_refused(pki, signed):
    backend = InProcessCryptoBackend()
    with pytest.raises(BadStructure):
        backend.validate_signature(signed, pki.crt("idp"), "pem", ASSERTION, None)
    with pytest.raises(SignatureError):  # _resp1 exists, but it is not an Assertion (as xmlsec1)
        backend.validate_signature(signed, pki.crt("idp"), "pem", ASSERTION, "_resp1")


def test_concurrent_validation_on_a_shared_backend(pki, signed):
    tampered = signed.replace("value-7-", "value-7X", 1)
    backend = InProcessCryptoBackend()
    outcomes: list[tuple[bool, bool]] = []

    def work(doc: str, expected: bool) -> None:
        for _ in range(30):
            try:
                ok = backend.validate_signature(doc, pki.crt("idp"), "pem", ASSERTION, "_a1")
            except SignatureError:
                ok = False
            outcomes.append((ok, expected))

    threads = [threading.Thread(target=work, args=(doc, doc is signed)) for doc in (signed, tampered) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 240 and all(ok == expected for ok, expected in outcomes)


# -- signing ------------------------------------------------------------------------------------

def test_sign_statement_interoperates_with_xmlsec1(pki):
    ours = InProcessCryptoBackend()
    xml = response_xml(response_sig=template(pki, "_resp1"), assertion_sig=template(pki, "_a1"))
    xml = ours.sign_statement(xml, ASSERTION, pki.key("idp"), "_a1")
    xml = ours.sign_statement(xml, RESPONSE, pki.key("idp"), "_resp1")
    assert xml.count("<ds:SignatureValue>") + xml.count("<ns0:SignatureValue>") == 2
    assert pki.b64("idp")[:40] in xml  # the template's certificate survives
    assert STOCK.validate_signature(xml, pki.crt("idp"), "pem", RESPONSE, "_resp1")
    assert STOCK.validate_signature(xml, pki.crt("idp"), "pem", ASSERTION, "_a1")
    assert ours.validate_signature(xml, pki.crt("idp"), "pem", ASSERTION, "_a1")
    with pytest.raises(SignatureError):
        STOCK.validate_signature(xml.replace("value-1-", "value-1X"), pki.crt("idp"), "pem", ASSERTION, "_a1")


# -- pysaml2's own flow -------------------------------------------------------------------------

def _idp_metadata(pki: Pki) -> str:
    keys = "".join(
        f'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{pki.b64(name)}'
        '</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>' for name in ("evil", "idp"))
    return (f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="{DS}" '
            'entityID="https://idp.test"><md:IDPSSODescriptor '
            'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            f'{keys}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
            'Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>')


@pytest.fixture(scope="module")
def security(pki):
    """pysaml2's SecurityContext with metadata listing a wrong signing cert before the right one."""
    config = SPConfig().load({
        "entityid": "https://sp.test/metadata",
        "service": {"sp": {"endpoints": {"assertion_consumer_service": [("https://sp.test/acs",
                                                                         BINDING_HTTP_POST)]}}},
        "metadata": {"inline": [_idp_metadata(pki)]},
        "key_file": pki.key("sp"), "cert_file": pki.crt("sp"),
        "crypto_backend": "XMLSecurity",
    })
    sec = security_context(config)
    sec.crypto = InProcessCryptoBackend()
    return sec


def test_pysaml2_security_context_tries_each_metadata_cert(security, signed):
    response = security.correctly_signed_response(signed)
    assert response.id == "_resp1"
    assertion = response.assertion[0]
    assert security.check_signature(assertion, class_name(assertion), signed) is assertion
    with pytest.raises(SignatureError):
        security.correctly_signed_response(signed.replace("value-2-", "value-2X"))


def test_policy_refusals_come_out_of_pysaml2_with_their_reason(pki, security):
    """pysaml2 turns any XmlsecError into "Failed to verify signature"; a Refused passes through."""
    xml = response_xml(response_sig=template(pki, "_resp1", sign_alg=SIG_RSA_SHA1, digest_alg=DIGEST_SHA1))
    xml = stock_sign(xml, RESPONSE, "_resp1", pki.key("idp"))
    with pytest.raises(WeakAlgorithm):
        security.correctly_signed_response(xml)


# -- decryption ---------------------------------------------------------------------------------

def _encrypted_assertion_doc(signed: str) -> str:
    """What pysaml2's pre_encrypt_assertion does; by text, since moving the element in lxml
    would drop its (redundant) namespace declarations."""
    assert signed.count("<saml:Assertion ") == 1
    return (signed.replace("<saml:Assertion ", "<saml:EncryptedAssertion><saml:Assertion ")
            .replace("</saml:Assertion>", "</saml:Assertion></saml:EncryptedAssertion>"))


def stock_encrypt(pki: Pki, signed: str, msg_enc: str, key_enc: str, session_key: str) -> str:
    part = pre_encryption_part(msg_enc=msg_enc, key_enc=key_enc, encrypt_cert=pki.b64("sp"))
    return STOCK.encrypt_assertion(_encrypted_assertion_doc(signed), pki.crt("sp"), str(part), session_key)


def _decrypted_assertion(xml: str) -> etree._Element:
    root = etree.fromstring(xml.encode())
    assert root.find(f"{{{SAML}}}EncryptedAssertion/{{{XENC}}}EncryptedData") is None
    found = root.findall(f"{{{SAML}}}EncryptedAssertion/{{{SAML}}}Assertion")
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(("msg_enc", "session_key"), [(AES128_CBC, "aes-128"), (AES256_GCM, "aes-256")])
def test_decrypt_what_xmlsec1_encrypted(pki, signed, msg_enc, session_key):
    encrypted = stock_encrypt(pki, signed, msg_enc, OAEP_MGF1P, session_key)
    assert msg_enc in encrypted and "value-1-" not in encrypted
    backend = InProcessCryptoBackend()
    # pysaml2 hands decrypt() its own re-serialization of the Response (str(response)).
    reserialized = str(samlp.response_from_string(encrypted))
    decrypted = backend.decrypt(reserialized, pki.key("sp"))
    ours = _decrypted_assertion(decrypted)
    theirs = _decrypted_assertion(STOCK.decrypt(reserialized, pki.key("sp")))
    assert etree.tostring(ours, method="c14n", exclusive=True) == etree.tostring(
        theirs, method="c14n", exclusive=True)
    assert "value-1-" in decrypted
    assert backend.validate_signature(decrypted, pki.crt("idp"), "pem", ASSERTION, "_a1")
    parsed = samlp.response_from_string(decrypted)
    assert parsed.encrypted_assertion[0].extension_elements  # where pysaml2 looks for it


@pytest.mark.parametrize(("msg_enc", "key_enc", "session_key"), [
    (TRIPLEDES, OAEP_MGF1P, "des-192"),
    (AES128_CBC, RSA_1_5, "aes-128"),
])
def test_legacy_encryption_refused_unless_legacy(pki, signed, msg_enc, key_enc, session_key):
    encrypted = stock_encrypt(pki, signed, msg_enc, key_enc, session_key)
    with pytest.raises(WeakAlgorithm):
        InProcessCryptoBackend().decrypt(encrypted, pki.key("sp"))
    decrypted = InProcessCryptoBackend(allow_legacy=True).decrypt(encrypted, pki.key("sp"))
    assert _decrypted_assertion(decrypted).find(f".//{{{SAML}}}NameID").text == "alice"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def handmade_gcm(pki: Pki, signed: str) -> str:
    """aes256-gcm with xmlenc11 rsa-oaep (SHA-256, MGF1-SHA-256) and the EncryptedKey placed
    next to the EncryptedData, as SAML allows, built with ``cryptography`` alone."""
    root = etree.fromstring(signed.encode())
    assertion = root.find(f"{{{SAML}}}Assertion")
    plaintext = etree.tostring(assertion)
    session, iv = AESGCM.generate_key(bit_length=256), os.urandom(12)
    cipher = iv + AESGCM(session).encrypt(iv, plaintext, None)
    wrapped = pki.public_key("sp").encrypt(session, padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    encrypted = etree.fromstring(
        f'<saml:EncryptedAssertion xmlns:saml="{SAML}" xmlns:xenc="{XENC}" xmlns:xenc11="{XENC11}" '
        f'xmlns:ds="{DS}"><xenc:EncryptedData Id="_ed1" Type="{XENC}Element">'
        f'<xenc:EncryptionMethod Algorithm="{AES256_GCM}"/><ds:KeyInfo><ds:RetrievalMethod '
        f'Type="{XENC}EncryptedKey" URI="#_ek1"/></ds:KeyInfo>'
        f'<xenc:CipherData><xenc:CipherValue>{_b64(cipher)}</xenc:CipherValue></xenc:CipherData>'
        f'</xenc:EncryptedData><xenc:EncryptedKey Id="_ek1">'
        f'<xenc:EncryptionMethod Algorithm="{XENC11}rsa-oaep">'
        f'<ds:DigestMethod Algorithm="{XENC}sha256"/><xenc11:MGF Algorithm="{XENC11}mgf1sha256"/>'
        f'</xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue>{_b64(wrapped)}</xenc:CipherValue>'
        '</xenc:CipherData><xenc:ReferenceList><xenc:DataReference URI="#_ed1"/></xenc:ReferenceList>'
        '</xenc:EncryptedKey></saml:EncryptedAssertion>')
    assertion.addprevious(encrypted)
    root.remove(assertion)
    return etree.tostring(root).decode()


def test_decrypt_gcm_with_xmlenc11_oaep_and_sibling_key(pki, signed):
    encrypted = handmade_gcm(pki, signed)
    backend = InProcessCryptoBackend()
    decrypted = backend.decrypt(encrypted, pki.key("sp"))
    assert _decrypted_assertion(decrypted).find(f".//{{{SAML}}}NameID").text == "alice"
    assert backend.validate_signature(decrypted, pki.crt("idp"), "pem", ASSERTION, "_a1")
    tampered = encrypted.replace("<xenc:CipherValue>", "<xenc:CipherValue>AAAA", 1)
    with pytest.raises(DecryptError):  # GCM authenticates the ciphertext
        backend.decrypt(tampered, pki.key("sp"))


def test_not_self_contained_encrypted_assertion_is_refused(pki):
    """pysaml2 hands decrypt() str(response), which renames every prefix (ns0, ns1...): an
    Assertion encrypted without its own namespace declarations loses them. xmlsec1 then
    returns XML with unbound prefixes; we refuse it with a reason instead."""
    xml = response_xml(assertion_sig=template(pki, "_a1"), self_contained=False)
    xml = stock_sign(xml, ASSERTION, "_a1", pki.key("idp"))
    encrypted = stock_encrypt(pki, xml, AES128_CBC, OAEP_MGF1P, "aes-128")
    reserialized = str(samlp.response_from_string(encrypted))
    assert "<saml:Assertion" in STOCK.decrypt(reserialized, pki.key("sp"))  # unbound "saml:"
    with pytest.raises(BadStructure) as exc_info:
        InProcessCryptoBackend().decrypt(reserialized, pki.key("sp"))
    assert refusal(exc_info) == "encryption_structure"
    original = InProcessCryptoBackend().decrypt(encrypted, pki.key("sp"))  # prefixes still in scope
    assert _decrypted_assertion(original).get("ID") == "_a1"


def test_decrypt_encrypted_id_alone(pki):
    """pysaml2 decrypts an EncryptedID by passing its EncryptedData on its own (here as the
    xenc object, as decrypt_attributes does); aes128-cbc + rsa-oaep-mgf1p built by hand."""
    plaintext = f'<saml:NameID xmlns:saml="{SAML}">bob</saml:NameID>'.encode()
    session, iv = os.urandom(16), os.urandom(16)
    pad = 16 - len(plaintext) % 16
    padded = plaintext + os.urandom(pad - 1) + bytes([pad])  # XML Encryption's padding
    encryptor = Cipher(algorithms.AES(session), modes.CBC(iv)).encryptor()
    cipher = iv + encryptor.update(padded) + encryptor.finalize()
    wrapped = pki.public_key("sp").encrypt(session, padding.OAEP(
        mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))  # noqa: S303 - OAEP default
    xml = (f'<xenc:EncryptedData xmlns:xenc="{XENC}" xmlns:ds="{DS}" Type="{XENC}Element">'
           f'<xenc:EncryptionMethod Algorithm="{AES128_CBC}"/><ds:KeyInfo><xenc:EncryptedKey>'
           f'<xenc:EncryptionMethod Algorithm="{OAEP_MGF1P}"/><xenc:CipherData><xenc:CipherValue>'
           f'{_b64(wrapped)}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>'
           f'<xenc:CipherData><xenc:CipherValue>{_b64(cipher)}</xenc:CipherValue></xenc:CipherData>'
           '</xenc:EncryptedData>')
    decrypted = InProcessCryptoBackend().decrypt(xenc.encrypted_data_from_string(xml), pki.key("sp"))
    assert saml.name_id_from_string(decrypted).text == "bob"


def test_decrypt_with_the_wrong_key_fails(pki, signed):
    encrypted = stock_encrypt(pki, signed, AES128_CBC, OAEP_MGF1P, "aes-128")
    with pytest.raises(DecryptError):
        InProcessCryptoBackend().decrypt(encrypted, pki.key("evil"))


def test_cipher_reference_is_refused(pki, signed):
    encrypted = stock_encrypt(pki, signed, AES128_CBC, OAEP_MGF1P, "aes-128")
    root = etree.fromstring(encrypted.encode())
    data = root.find(f".//{{{XENC}}}EncryptedData/{{{XENC}}}CipherData")
    data.remove(data[0])
    etree.SubElement(data, f"{{{XENC}}}CipherReference", URI="file:///etc/hostname")
    with pytest.raises(BadStructure) as exc_info:
        InProcessCryptoBackend().decrypt(etree.tostring(root), pki.key("sp"))
    assert refusal(exc_info) == "encryption_structure"


def test_pysaml2_decrypt_keys_tries_each_key(pki, signed, security):
    encrypted = stock_encrypt(pki, signed, AES128_CBC, OAEP_MGF1P, "aes-128")
    keys = [Path(pki.key(name)).read_text() for name in ("evil", "sp")]
    decrypted = security.decrypt_keys(str(samlp.response_from_string(encrypted)), keys=keys)
    assert _decrypted_assertion(decrypted).find(f".//{{{SAML}}}NameID").text == "alice"
    with pytest.raises(DecryptError):
        security.decrypt_keys(encrypted, keys=keys[:1])
