"""A real SAML IdP for tests: pysaml2's own ``saml2.server.Server``, signing with the stock
``xmlsec1`` program (an implementation independent of our in-process verifier)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.authn_context import PASSWORDPROTECTEDTRANSPORT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, NameID
from saml2.server import Server
from saml2.sigver import get_xmlsec_binary
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256


def make_keypair(directory: Path, name: str, *, bits: int = 2048) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TestIdP:
    """An in-process IdP. ``entity_id`` doubles as the base of its (never fetched) URLs."""

    __test__ = False

    def __init__(self, directory: Path, entity_id: str = "https://idp.example.org/idp",
                 key_name: str = "idp") -> None:
        self.entity_id = entity_id
        self.key_file, self.cert_file = make_keypair(directory, key_name)
        conf = {
            "entityid": entity_id,
            "service": {"idp": {
                "endpoints": {
                    "single_sign_on_service": [(f"{entity_id}/sso/redirect", BINDING_HTTP_REDIRECT),
                                               (f"{entity_id}/sso/post", BINDING_HTTP_POST)],
                    "single_logout_service": [(f"{entity_id}/slo/redirect", BINDING_HTTP_REDIRECT)],
                },
                "policy": {"default": {"lifetime": {"minutes": 5}, "name_form": NAME_FORMAT_URI}},
                "name_id_format": [NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT],
                "want_authn_requests_signed": True,
            }},
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "encryption_keypairs": [{"key_file": str(self.key_file), "cert_file": str(self.cert_file)}],
            "xmlsec_binary": get_xmlsec_binary(),
            "crypto_backend": "xmlsec1",
            "metadata": {},
            "accepted_time_diff": 60,
            "delete_tmpfiles": True,
        }
        config = IdPConfig()
        config.load(conf)
        self.server = Server(config=config)
        # pysaml2's IdP encrypts with 3DES by default; modern IdPs use AES. ``data_encryption``
        # selects what the next encrypted response uses (3DES for the legacy negative test).
        self.data_encryption = "aes-128"
        original = self.server.sec.encrypt_assertion

        def encrypt_assertion(statement, enc_key, template, key_type="des-192", node_xpath=None):
            algorithms = {"aes-128": "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                          "des-192": "http://www.w3.org/2001/04/xmlenc#tripledes-cbc"}
            template.encryption_method.algorithm = algorithms[self.data_encryption]
            return original(statement, enc_key, template, self.data_encryption, node_xpath)

        self.server.sec.encrypt_assertion = encrypt_assertion

    def metadata_xml(self) -> bytes:
        xml = create_metadata_string(None, config=self.server.config, sign=False)
        return xml if isinstance(xml, bytes) else xml.encode()

    def trust_sp(self, sp_metadata_xml: str | bytes) -> None:
        text = sp_metadata_xml.decode() if isinstance(sp_metadata_xml, bytes) else sp_metadata_xml
        self.server.metadata.load("inline", text)

    def read_redirect(self, location: str):
        """Parse (and verify the signature of) an HTTP-Redirect AuthnRequest URL."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        request = self.server.parse_authn_request(
            query["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=query.get("RelayState"),
            sigalg=query.get("SigAlg"), signature=query.get("Signature"),
        )
        return request, query.get("RelayState", "")

    def response_xml(
        self, *, in_response_to: str | None, destination: str, sp_entity_id: str, subject: str = "alice",
        attributes: dict | None = None, sign_response: bool = True, sign_assertion: bool = True,
        encrypt_cert: str | None = None, name_id_format: str = NAMEID_FORMAT_PERSISTENT,
        sign_alg: str = SIG_RSA_SHA256, digest_alg: str = DIGEST_SHA256,
    ) -> str:
        identity = attributes if attributes is not None else {
            "mail": ["alice@corp.example"], "givenName": ["Alice"], "eduPersonAffiliation": ["staff"]}
        kwargs = {}
        if encrypt_cert:
            kwargs = {"encrypt_assertion": True, "encrypt_cert_assertion": encrypt_cert,
                      "encrypt_assertion_self_contained": True}
        response = self.server.create_authn_response(
            identity=identity, in_response_to=in_response_to, destination=destination,
            sp_entity_id=sp_entity_id, name_id=NameID(format=name_id_format, text=subject),
            authn={"class_ref": PASSWORDPROTECTEDTRANSPORT, "authn_auth": self.entity_id},
            sign_response=sign_response, sign_assertion=sign_assertion,
            sign_alg=sign_alg, digest_alg=digest_alg, **kwargs,
        )
        return str(response)


def post_body(xml: str, relay_state: str | None) -> dict[str, str]:
    body = {"SAMLResponse": base64.b64encode(xml.encode()).decode()}
    if relay_state is not None:
        body["RelayState"] = relay_state
    return body
