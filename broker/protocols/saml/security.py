"""pysaml2's signature check, without its per-check re-serialisation.

``SecurityContext._check_signature`` (pysaml2 7.5.5) re-serialises the signed element
(``str(item)``) to schema-validate it, and writes each metadata certificate to a temporary
file, for every signature it checks. ``FastSecurityContext`` makes the same checks in the
same order on the received document instead:

1. certificates only from the IdP's metadata (never KeyInfo; ``MissingKey`` without any);
2. XSD validation (the same bundled XSDs, with libxml2: ``schema.py``): the received
   document is validated as a whole once, before pysaml2 parses it (``validate_received``);
   an element from any other document (a decrypted assertion) is validated on its own, as
   pysaml2 does;
3. saml-core 5.4's signature profile on the parsed objects (one Reference, to the enclosing
   element's ID, enveloped + exclusive c14n only, no ds:Object), exactly as pysaml2 does;
4. cryptographic verification in process (``crypto.py``, which checks the profile and the
   algorithm allow-list again on the XML tree, and refuses duplicate IDs).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import saml2.response
from saml2.sigver import (
    ALLOWED_CANONICALIZATIONS,
    ALLOWED_TRANSFORMS,
    TRANSFORM_ENVELOPED,
    MissingKey,
    SecurityContext,
    SignatureError,
    XmlsecError,
    pem_format,
)
from saml2.xml.schema import XMLSchemaError

from . import schema

_validated = threading.local()


def _digest(document: str | bytes) -> bytes:
    return hashlib.sha256(document.encode() if isinstance(document, str) else document).digest()


def validate_received(document: bytes) -> None:
    """Schema-validate the document as received (raises ``XMLSchemaError``) and remember it,
    so the signature checks on elements of this very document need not validate again."""
    schema.validate(document)
    _validated.digest = _digest(document)


@contextmanager
def received_document_validated() -> Iterator[None]:
    """While pysaml2 parses the document just passed to ``validate_received``, skip its own
    object-level validation of it (``valid_instance``, the same constraints as the XSDs the
    document was just validated against with libxml2): validated once, not twice."""
    _validated.parsing = True
    try:
        yield
    finally:
        _validated.parsing = False


_pysaml2_valid_instance = saml2.response.valid_instance


def _valid_instance(instance) -> bool:
    if getattr(_validated, "parsing", False):
        return True
    return _pysaml2_valid_instance(instance)


# pysaml2's StatusResponse._postamble calls this module-level name for the message it parsed.
saml2.response.valid_instance = _valid_instance


def _validate(decoded_xml: str | bytes, item) -> None:
    if getattr(_validated, "digest", None) == _digest(decoded_xml):
        return  # the whole received document, which contains ``item``, was validated
    schema.validate(str(item))


def _profile_ok(item) -> bool:
    """pysaml2's own saml-core 5.4 checks, on its parsed objects."""
    references = item.signature.signed_info.reference
    if len(references) != 1:
        return False
    uri = getattr(references[0], "uri", None) or ""
    if not uri.startswith("#") or len(uri) < 2 or uri != f"#{item.id}":
        return False
    if item.signature.signed_info.canonicalization_method.algorithm not in ALLOWED_CANONICALIZATIONS:
        return False
    transforms = [t.algorithm for t in references[0].transforms.transform]
    if not 1 <= len(transforms) <= 2 or not set(transforms) <= ALLOWED_TRANSFORMS:
        return False
    return TRANSFORM_ENVELOPED in transforms and not item.signature.object


class FastSecurityContext(SecurityContext):
    def _check_signature(self, decoded_xml, item, node_name=None, origdoc=None, must=False,
                         only_valid_cert=False, issuer=None):
        node_name = node_name or "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
        try:
            _issuer = item.issuer.text.strip()
        except AttributeError:
            try:
                _issuer = issuer.text.strip()
            except AttributeError:
                _issuer = None
        try:
            certs = [cert for _name, cert in self.metadata.certs(_issuer, "any", "signing")]
        except (KeyError, AttributeError):
            certs = []
        if not certs:
            raise MissingKey(_issuer)
        try:
            _validate(decoded_xml, item)
        except XMLSchemaError as exc:
            raise SignatureError({"message": "Signature verification failed. Invalid document format.",
                                  "ID": item.id, "issuer": _issuer, "type": node_name}) from exc
        if not _profile_ok(item):
            raise SignatureError({"message": "Signature failed to meet constraints on xmldsig",
                                  "item ID": item.id, "issuer": _issuer, "node name": node_name})
        for cert in certs:
            try:
                if self.crypto.verify_with_certificate(decoded_xml, pem_format(cert).decode(),
                                                       node_name, item.id):
                    return item
            except (XmlsecError, SignatureError):
                continue  # the next metadata certificate (key rollover)
        raise SignatureError("Failed to verify signature")
