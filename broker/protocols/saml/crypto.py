"""An in-process pysaml2 crypto backend on python-xmlsec (libxmlsec1 linked into the process).

pysaml2's stock ``CryptoBackendXmlSec1`` writes every document to a temporary file and runs
the ``xmlsec1`` program (plus ``xmlsec1 --version``, twice) for the Response signature, again
for the Assertion signature and per decryption: tens of milliseconds each. This backend does
the same work in-process on an lxml tree (well under a millisecond), and it is stricter than
the stock one, because the broker means to skip pysaml2's object-level checks later (they
re-parse and schema-validate each signed item):

* the XML is parsed with a hardened parser and any DOCTYPE is refused (XXE, entity bombs);
* the signed element is looked up by type *and* ID, and a second element carrying the same
  ID value is refused (signature wrapping: what xmlsec verifies must be what pysaml2 reads);
* the SAML XML-signature profile (saml-core 5.4) is enforced on the tree: one direct
  ``ds:Signature``, one ``ds:Reference`` to ``#ID``, only enveloped + exclusive c14n
  transforms, no ``ds:Object``; and algorithms come from an allow-list (no HMAC: with a
  public key as the "secret" it forges anything; SHA-1 and rsa-1_5/3DES only for IdPs an
  admin explicitly marked legacy). The same allow-list is handed to xmlsec as the set of
  enabled transforms, so a gap in one layer is caught by the other;
* the verification key comes only from the certificate file pysaml2 passes (metadata): the
  signature context has no keys manager, so xmlsec never reads ``ds:KeyInfo``.

A signature that does not verify (or a key that cannot decrypt) raises pysaml2's
``SignatureError`` / ``DecryptError`` (both ``XmlsecError``), exactly like the stock backend, so
``SecurityContext`` goes on to the next metadata certificate / decryption key. A *policy*
refusal (``Refused``: ``WeakAlgorithm``, ``UnsafeXml``, ``BadStructure``) is deliberately not an
``XmlsecError``: it does not depend on the key, so trying other keys is pointless, and pysaml2
would reduce it to "Failed to verify signature". Every pysaml2 handler on the way re-raises
such exceptions, so it reaches the broker with its ``code`` for the error page (fail closed).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import xmlsec
from lxml import etree
from saml2 import SamlBase
from saml2.sigver import CryptoBackend, DecryptError, SignatureError

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XENC_NS = "http://www.w3.org/2001/04/xmlenc#"
XENC11_NS = "http://www.w3.org/2009/xmlenc11#"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
_ID_ATTRIBUTES = ("ID", "Id", "id", XML_ID)
_DECLARATION = '<?xml version="1.0"?>\n'  # what the xmlsec1 program's output starts with

_C = xmlsec.constants
_C14N = (_C.TransformExclC14N, _C.TransformExclC14NWithComments)
_SIGNATURE = (_C.TransformRsaSha256, _C.TransformRsaSha384, _C.TransformRsaSha512,
              _C.TransformEcdsaSha256, _C.TransformEcdsaSha384, _C.TransformEcdsaSha512)
_SIGNATURE_LEGACY = (_C.TransformRsaSha1, _C.TransformEcdsaSha1)
_DIGEST = (_C.TransformSha256, _C.TransformSha384, _C.TransformSha512)
_DIGEST_LEGACY = (_C.TransformSha1,)
_ENVELOPED = _C.TransformEnveloped.href

_KEY_TRANSPORT = {_C.TransformRsaOaep.href, f"{XENC11_NS}rsa-oaep"}
_KEY_TRANSPORT_LEGACY = {_C.TransformRsaPkcs1.href}
# OAEP's own hash (DigestMethod) and mask function: SHA-1 is sound inside OAEP and the default.
_OAEP_DIGESTS = {t.href for t in (_C.TransformSha1, *_DIGEST)}
_OAEP_MGFS = {f"{XENC11_NS}mgf1sha{n}" for n in (1, 224, 256, 384, 512)}
# data-encryption algorithm -> (xmlsec key class, key length in bytes)
_DATA: dict[str, tuple[xmlsec.KeyData, int]] = {
    t.href: (_C.KeyDataAes, size)
    for t, size in ((_C.TransformAes128Cbc, 16), (_C.TransformAes192Cbc, 24), (_C.TransformAes256Cbc, 32),
                    (_C.TransformAes128Gcm, 16), (_C.TransformAes192Gcm, 24), (_C.TransformAes256Gcm, 32))
}
_DATA_LEGACY: dict[str, tuple[xmlsec.KeyData, int]] = {_C.TransformDes3Cbc.href: (_C.KeyDataDes, 24)}
_ENC_TYPES = {f"{XENC_NS}Element", f"{XENC_NS}Content"}
_DATA_REFERENCE = f"{{{XENC_NS}}}ReferenceList/{{{XENC_NS}}}DataReference"
_MAX_DECRYPT_ROUNDS = 4  # EncryptedAssertion inside a decrypted Advice, and so on


class Refused(Exception):
    """The document breaks the broker's crypto policy, whatever key is tried."""

    code = "crypto_refused"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.code


class WeakAlgorithm(Refused):
    """HMAC, SHA-1, rsa-1_5, 3DES (the last three allowed for IdPs marked legacy) or unknown."""

    code = "weak_algorithm"


class UnsafeXml(Refused):
    """A DOCTYPE (code ``xml_doctype``) or XML that the hardened parser rejects (``xml_malformed``)."""

    code = "xml_doctype"


class BadStructure(Refused):
    """Signature wrapping (``duplicate_id``), a SAML signature-profile violation
    (``signature_structure``) or encrypted data we do not process (``encryption_structure``)."""

    code = "signature_structure"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=False, remove_pis=False)


def _as_bytes(text: str | bytes | SamlBase) -> bytes:
    if isinstance(text, SamlBase):
        text = str(text)
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def _parse(data: bytes) -> etree._Element:
    """Parse with the hardened parser; a DOCTYPE (and so any entity declaration) is refused."""
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"document is not well-formed XML: {exc}", "xml_malformed") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise UnsafeXml("document declares a DOCTYPE; refused")
    return root


def _qname(node_name: str) -> str:
    """pysaml2's ``urn:...:assertion:Assertion`` -> lxml's ``{urn:...:assertion}Assertion``."""
    namespace, _, local = node_name.rpartition(":")
    return f"{{{namespace}}}{local}" if namespace else local


def _unbound(name: str) -> bool:
    """lxml's name for an element/attribute whose prefix was never declared: ``saml:Assertion``."""
    return ":" in name and not name.startswith("{")


def _one(parent: etree._Element, tag: str, what: str) -> etree._Element:
    found = parent.findall(tag)
    if len(found) != 1:
        raise BadStructure(f"expected exactly one {what}, found {len(found)}")
    return found[0]


@dataclass(slots=True)
class _Parsed:
    """A parsed document with its IDs registered for xmlsec and counted for duplicate checks."""

    data: bytes
    root: etree._Element
    id_counts: Counter[str]

    @classmethod
    def of(cls, data: bytes) -> _Parsed:
        root = _parse(data)
        counts: Counter[str] = Counter()
        for element in root.iter(etree.Element):
            for attribute in _ID_ATTRIBUTES:
                value = element.get(attribute)
                if value is not None:
                    counts[value] += 1
        xmlsec.tree.add_ids(root, ["ID"])
        return cls(data=data, root=root, id_counts=counts)


@lru_cache(maxsize=256)
def _certificate_key(cert_pem: str) -> xmlsec.Key:
    """The public key of a PEM certificate (metadata certificates are few and long-lived)."""
    try:
        return xmlsec.Key.from_memory(cert_pem.encode(), _C.KeyDataFormatCertPem)
    except xmlsec.Error as exc:
        raise SignatureError(f"unusable certificate: {exc}") from None


class InProcessCryptoBackend(CryptoBackend):
    """Drop-in for ``saml2.sigver.CryptoBackendXmlSec1`` (set ``client.sec.crypto``)."""

    def __init__(self, *, allow_legacy: bool = False) -> None:
        super().__init__()
        self.allow_legacy = allow_legacy
        c14n = list(_C14N)
        signature = list(_SIGNATURE) + (list(_SIGNATURE_LEGACY) if allow_legacy else [])
        digest = list(_DIGEST) + (list(_DIGEST_LEGACY) if allow_legacy else [])
        self._signature_transforms = c14n + signature  # SignedInfo: c14n + signature method
        self._reference_transforms = [_C.TransformEnveloped, *c14n, *digest]  # Reference: transforms + digest
        self._c14n = {t.href for t in c14n}
        self._signature_methods = {t.href for t in signature}
        self._digests = {t.href for t in digest}
        self._key_transport = _KEY_TRANSPORT | (_KEY_TRANSPORT_LEGACY if allow_legacy else set())
        self._data = {**_DATA, **(_DATA_LEGACY if allow_legacy else {})}
        self.__local = threading.local()  # the parse cache is per thread (mangled: subclasses)

    @property
    def version(self) -> str:
        return ".".join(str(n) for n in xmlsec.get_libxmlsec_version())

    # -- signatures -------------------------------------------------------------------------

    def validate_signature(self, signedtext: str | bytes, cert_file: str, cert_type: str, node_name: str,
                           node_id: str | None) -> bool:
        """Verify the enveloped signature of the ``node_name`` element whose ID is ``node_id``.

        pysaml2 calls this with the original document, first for the Response and then for
        the Assertion, for each signing certificate in the IdP's metadata until one works.
        Returns True, or raises ``SignatureError`` like the stock backend (never False), or
        ``Refused`` when the document breaks the policy.
        """
        try:
            key_format = {"pem": _C.KeyDataFormatCertPem, "der": _C.KeyDataFormatCertDer}[cert_type.lower()]
        except KeyError:
            raise SignatureError(f"unsupported certificate type {cert_type!r}") from None
        signature = self._signature_of(signedtext, node_name, node_id)
        try:
            key = xmlsec.Key.from_file(cert_file, key_format)
        except xmlsec.Error as exc:
            raise SignatureError(f"unusable certificate: {exc}") from None
        return self._verify(signature, key, node_name, node_id)

    def verify_with_certificate(self, signedtext: str | bytes, cert_pem: str, node_name: str,
                                node_id: str | None) -> bool:
        """``validate_signature`` with the certificate in memory (PEM text), its key parsed
        once per process: the hot path of the ACS (no temporary files, no re-parsing)."""
        signature = self._signature_of(signedtext, node_name, node_id)
        return self._verify(signature, _certificate_key(cert_pem), node_name, node_id)

    def _signature_of(self, signedtext: str | bytes, node_name: str, node_id: str | None) -> etree._Element:
        if not node_id:
            raise BadStructure("no node ID: will not guess the signed element")
        parsed = self._parsed(_as_bytes(signedtext))
        if (count := parsed.id_counts[node_id]) != 1:
            raise BadStructure(f"ID {node_id!r} occurs {count} times (signature wrapping?)", "duplicate_id")
        # Nothing to verify is a plain SignatureError, as with xmlsec1: pysaml2's load_instance
        # relies on it to retry an Assertion lookup as a Response.
        tag = _qname(node_name)
        targets = [e for e in parsed.root.iter(tag) if e.get("ID") == node_id]
        signatures = targets[0].findall(f"{{{DS_NS}}}Signature") if targets else []
        if not signatures:
            raise SignatureError(f"no signed {node_name} with ID {node_id!r}")
        if len(signatures) > 1:
            raise BadStructure(f"{node_name} {node_id!r} has {len(signatures)} signatures")
        self._check_profile(signatures[0], node_id)
        return signatures[0]

    def _verify(self, signature: etree._Element, key: xmlsec.Key, node_name: str,
                node_id: str | None) -> bool:
        ctx = xmlsec.SignatureContext()  # no KeysManager: ds:KeyInfo is never consulted
        for transform in self._signature_transforms:
            ctx.enable_signature_transform(transform)
        for transform in self._reference_transforms:
            ctx.enable_reference_transform(transform)
        try:
            ctx.key = key
            ctx.verify(signature)
        except xmlsec.Error as exc:
            raise SignatureError(f"signature of {node_name} {node_id!r} does not verify: {exc}") from None
        return True

    def _parsed(self, data: bytes) -> _Parsed:
        """pysaml2 validates the same original document twice: parse it once per thread."""
        cached: _Parsed | None = getattr(self.__local, "parsed", None)
        if cached is None or cached.data != data:
            self.__local.parsed = None
            cached = self.__local.parsed = _Parsed.of(data)
        return cached

    def _check_profile(self, signature: etree._Element, node_id: str) -> None:
        """saml-core 5.4 and the algorithm allow-list, on the tree (pysaml2 checks its objects)."""
        if next(signature.iter(f"{{{DS_NS}}}Object"), None) is not None:
            raise BadStructure("ds:Object is not allowed in SAML signatures")
        signed_info = _one(signature, f"{{{DS_NS}}}SignedInfo", "ds:SignedInfo")
        c14n = _one(signed_info, f"{{{DS_NS}}}CanonicalizationMethod", "ds:CanonicalizationMethod")
        if c14n.get("Algorithm") not in self._c14n:
            raise BadStructure(f"canonicalization {c14n.get('Algorithm')!r} is not allowed")
        method = _one(signed_info, f"{{{DS_NS}}}SignatureMethod", "ds:SignatureMethod").get("Algorithm")
        if method not in self._signature_methods:
            raise WeakAlgorithm(f"signature algorithm {method!r} is not allowed")
        reference = _one(signed_info, f"{{{DS_NS}}}Reference", "ds:Reference")
        if reference.get("URI") != f"#{node_id}":
            raise BadStructure(f"reference {reference.get('URI')!r} is not the signed element")
        transforms = _one(reference, f"{{{DS_NS}}}Transforms", "ds:Transforms")
        algorithms = [t.get("Algorithm") for t in transforms.findall(f"{{{DS_NS}}}Transform")]
        if not 1 <= len(algorithms) <= 2 or _ENVELOPED not in algorithms or any(
                a != _ENVELOPED and a not in self._c14n for a in algorithms):
            raise BadStructure(f"transforms {algorithms!r} are not allowed")
        digest = _one(reference, f"{{{DS_NS}}}DigestMethod", "ds:DigestMethod").get("Algorithm")
        if digest not in self._digests:
            raise WeakAlgorithm(f"digest algorithm {digest!r} is not allowed")

    def sign_statement(self, statement: str | bytes | SamlBase, node_name: str, key_file: str,
                       node_id: str | None) -> str:
        """Fill in the ``ds:Signature`` template (pysaml2's ``pre_signature_part``) of the
        ``node_name`` element with ID ``node_id`` using the PEM private key in ``key_file``."""
        try:
            root = _parse(_as_bytes(statement))
            tag = _qname(node_name)
            if node_id:
                targets = [e for e in root.iter(tag) if e.get("ID") == node_id]
            else:  # like ``xmlsec1 --sign`` without --node-id: the first template in the document
                targets = [s.getparent() for s in root.iter(f"{{{DS_NS}}}Signature")][:1]
            templates = targets[0].findall(f"{{{DS_NS}}}Signature") if len(targets) == 1 else []
            if len(templates) != 1:
                raise SignatureError(f"no single {node_name} with ID {node_id!r} and a signature template")
            xmlsec.tree.add_ids(root, ["ID"])
            ctx = xmlsec.SignatureContext()
            ctx.key = xmlsec.Key.from_file(key_file, _C.KeyDataFormatPem)
            ctx.sign(templates[0])
        except xmlsec.Error as exc:
            raise SignatureError(f"signing {node_name} {node_id!r} failed: {exc}") from None
        return _DECLARATION + etree.tostring(root.getroottree(), encoding="unicode")

    # -- decryption -------------------------------------------------------------------------

    def decrypt(self, enctext: str | bytes | SamlBase, key_file: str) -> str:
        """Decrypt with the PEM private key in ``key_file``; return the document as text.

        Like ``xmlsec1 --decrypt``, each ``xenc:EncryptedData`` is replaced in place by its
        plaintext, so a decrypted Assertion ends up inside its ``saml:EncryptedAssertion``,
        where pysaml2 looks for it. Every EncryptedData directly under an EncryptedAssertion is
        decrypted (also ones revealed inside a decrypted Advice); without any, the first
        EncryptedData of the document (pysaml2 passes EncryptedID / EncryptedAttribute alone).
        """
        root = _parse(_as_bytes(enctext))
        try:
            private_key = xmlsec.Key.from_file(key_file, _C.KeyDataFormatPem)
        except xmlsec.Error as exc:
            raise DecryptError(f"cannot load decryption key: {exc}") from None
        encrypted_data = f"{{{XENC_NS}}}EncryptedData"
        in_assertion = f"{{{SAML_NS}}}EncryptedAssertion"
        targets = [e for e in root.iter(encrypted_data) if e.getparent() is not None
                   and e.getparent().tag == in_assertion]
        if not targets:
            targets = [root] if root.tag == encrypted_data else list(root.iter(encrypted_data))[:1]
        if not targets:
            raise DecryptError("no xenc:EncryptedData in the document")
        for _round in range(_MAX_DECRYPT_ROUNDS):
            for node in targets:
                result = self._decrypt_data(node, private_key)
                if node is root:
                    root = result
            targets = [e for e in root.iter(encrypted_data) if e.getparent() is not None
                       and e.getparent().tag == in_assertion]
            if not targets:
                return _DECLARATION + etree.tostring(root.getroottree(), encoding="unicode")
        raise BadStructure("too deeply nested encrypted assertions", "encryption_structure")

    def _decrypt_data(self, node: etree._Element, private_key: xmlsec.Key) -> etree._Element:
        algorithm = self._check_encrypted(node, self._data, "data encryption")
        if node.get("Type") not in _ENC_TYPES:
            raise BadStructure(f"EncryptedData Type {node.get('Type')!r}", "encryption_structure")
        key_class, key_size = self._data[algorithm]
        session_key = self._session_key(node, private_key, key_size)
        ctx = xmlsec.EncryptionContext()  # no KeysManager: ds:KeyInfo is never consulted
        try:
            ctx.key = xmlsec.Key.from_binary_data(key_class, session_key)
            result = ctx.decrypt(node)
        except xmlsec.Error as exc:
            raise DecryptError(f"decryption failed: {exc}") from None
        if not isinstance(result, etree._Element):
            raise BadStructure("decryption did not yield XML", "encryption_structure")
        elements = result.iter(etree.Element)
        if any(_unbound(e.tag) or any(_unbound(name) for name in e.attrib) for e in elements):
            # libxml2 only warns: the plaintext used prefixes declared outside the encrypted
            # element (not self-contained), and pysaml2's re-serialization renamed them.
            raise BadStructure("decrypted XML uses undeclared namespace prefixes", "encryption_structure")
        return result

    def _session_key(self, node: etree._Element, private_key: xmlsec.Key, key_size: int) -> bytes:
        """Unwrap the session key from an EncryptedKey in the EncryptedData's KeyInfo or, as
        SAML allows, next to it (e.g. inside the EncryptedAssertion), trying each one."""
        candidates = node.findall(f"{{{DS_NS}}}KeyInfo/{{{XENC_NS}}}EncryptedKey")
        parent = node.getparent()
        if parent is not None:
            data_id = node.get("Id")
            for key in parent.findall(f"{{{XENC_NS}}}EncryptedKey"):
                uris = [r.get("URI") for r in key.iterfind(_DATA_REFERENCE)]
                if not uris or (data_id and f"#{data_id}" in uris):
                    candidates.append(key)
        refused: list[Refused] = []
        for key in candidates:
            try:
                self._check_encrypted(key, self._key_transport, "key transport")
            except Refused as exc:  # perhaps another recipient's; refuse only if nothing else works
                refused.append(exc)
                continue
            ctx = xmlsec.EncryptionContext()
            ctx.key = private_key
            try:
                session_key = ctx.decrypt(key)
            except xmlsec.Error:
                continue  # addressed to another recipient's key, or not ours
            if isinstance(session_key, bytes) and len(session_key) == key_size:
                return session_key
        if refused:
            raise refused[0]
        raise DecryptError("no xenc:EncryptedKey that this key decrypts")

    @staticmethod
    def _check_encrypted(node: etree._Element, allowed: Container[str], what: str) -> str:
        method = node.find(f"{{{XENC_NS}}}EncryptionMethod")
        if method is None:
            raise BadStructure(f"{what}: no EncryptionMethod", "encryption_structure")
        algorithm = method.get("Algorithm")
        if algorithm is None or algorithm not in allowed:
            raise WeakAlgorithm(f"{what} algorithm {algorithm!r} is not allowed")
        if node.find(f"{{{XENC_NS}}}CipherData/{{{XENC_NS}}}CipherValue") is None:
            raise BadStructure("only inline CipherValue is supported", "encryption_structure")
        digest = method.find(f"{{{DS_NS}}}DigestMethod")
        if digest is not None and digest.get("Algorithm") not in _OAEP_DIGESTS:
            raise WeakAlgorithm(f"OAEP digest {digest.get('Algorithm')!r} is not allowed")
        mgf = method.find(f"{{{XENC11_NS}}}MGF")
        if mgf is not None and mgf.get("Algorithm") not in _OAEP_MGFS:
            raise WeakAlgorithm(f"OAEP mask function {mgf.get('Algorithm')!r} is not allowed")
        return algorithm

    # -- the SP never encrypts --------------------------------------------------------------

    def encrypt(self, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("the broker never encrypts SAML messages")

    def encrypt_assertion(self, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError("the broker never encrypts SAML assertions")
