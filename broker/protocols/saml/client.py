"""A pysaml2 SP client per IdP, built from the database and cached per process.

Building a ``Saml2Client`` parses the IdP's metadata and our keys: far too slow to do per
request, so clients are cached and rebuilt only when the IdP row or our keys change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.attribute_converter import AttributeConverter
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.population import Population
from saml2.sigver import RSACrypto, import_rsa_key_from_file
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from broker import keys
from broker.models import IdentityProvider

from . import schema
from .crypto import InProcessCryptoBackend
from .security import FastSecurityContext

# pysaml2 renames attributes through its bundled maps; we want the names exactly as sent,
# so the broker's own normalization (and the IdP's attribute_map) sees them. A converter
# for a name format nobody uses makes pysaml2 fall back to the raw attribute name.
_RAW_NAMES = AttributeConverter(name_format="urn:x-broker:raw-names")


def sp_entity_id(idp: IdentityProvider) -> str:
    """Our entity ID towards ``idp``: overridable for legacy IdPs that pinned one."""
    return idp.config.get("sp_entity_id") or f"{settings.BASE_URL}/sso/{idp.slug}/saml/metadata/"


def acs_url(idp: IdentityProvider) -> str:
    return f"{settings.BASE_URL}/sso/{idp.slug}/saml/acs/"


def slo_url(idp: IdentityProvider) -> str:
    return f"{settings.BASE_URL}/sso/{idp.slug}/saml/slo/"


def build_config(idp: IdentityProvider) -> SPConfig:
    current = keys.current()
    decryption = keys.decryption_keys()
    cfg = idp.config
    conf: dict[str, Any] = {
        "entityid": sp_entity_id(idp),
        "service": {
            "sp": {
                "name": settings.SAML_SP_ORGANIZATION,
                "endpoints": {
                    "assertion_consumer_service": [(acs_url(idp), BINDING_HTTP_POST)],
                    "single_logout_service": [
                        (slo_url(idp), BINDING_HTTP_REDIRECT),
                        (slo_url(idp), BINDING_HTTP_POST),
                    ],
                },
                "allow_unsolicited": bool(cfg.get("allow_unsolicited", False)),
                "authn_requests_signed": True,
                "logout_requests_signed": True,
                "logout_responses_signed": True,
                # Either the Response or the Assertion must carry a valid signature
                # (Shibboleth signs the Response, ADFS/Entra the Assertion). Any signature
                # that is present must verify: see acs.py.
                "want_response_signed": False,
                "want_assertions_signed": False,
                "want_assertions_or_response_signed": True,
                "only_use_keys_in_metadata": True,
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "name_id_format_allow_create": True,
            }
        },
        "metadata": {"inline": [cfg["metadata_xml"]]},
        "key_file": str(current.key_path),
        "cert_file": str(current.cert_path),
        "encryption_keypairs": [
            {"key_file": str(k.key_path), "cert_file": str(k.cert_path)} for k in decryption
        ],
        # No xmlsec1 binary: the in-process backend replaces it right after construction.
        "crypto_backend": "XMLSecurity",
        "accepted_time_diff": idp.clock_skew,
        "allow_unknown_attributes": True,
        "delete_tmpfiles": True,
    }
    config = SPConfig()
    config.load(conf)
    config.attribute_converters = [_RAW_NAMES]
    return config


class TrackingBackend(InProcessCryptoBackend):
    """Remembers which signed elements verified during the current request.

    pysaml2 tries each metadata certificate in turn and swallows some failures; the ACS
    needs to know, per (element type, ID), whether any certificate verified it.
    """

    def __init__(self, *, allow_legacy: bool = False) -> None:
        super().__init__(allow_legacy=allow_legacy)
        self._local = threading.local()

    def reset_results(self) -> None:
        self._local.results = {}

    def results(self) -> dict[tuple[str, str], bool]:
        return dict(getattr(self._local, "results", {}))

    def _tracked(self, node_name: str, node_id: str, verify) -> bool:
        results = getattr(self._local, "results", None)
        if results is None:
            results = self._local.results = {}
        key = (node_name, node_id)
        try:
            ok = verify()
        except Exception:
            results.setdefault(key, False)
            raise
        results[key] = bool(ok) or results.get(key, False)
        return ok

    def validate_signature(self, signedtext, cert_file, cert_type, node_name, node_id):
        return self._tracked(node_name, node_id, lambda: super(TrackingBackend, self).validate_signature(
            signedtext, cert_file, cert_type, node_name, node_id))

    def verify_with_certificate(self, signedtext, cert_pem, node_name, node_id):
        return self._tracked(node_name, node_id, lambda: super(TrackingBackend, self).verify_with_certificate(
            signedtext, cert_pem, node_name, node_id))


@dataclass
class _Cached:
    version: tuple
    client: Saml2Client
    backend: TrackingBackend


_cache: dict[int, _Cached] = {}
_lock = threading.Lock()


def _version(idp: IdentityProvider) -> tuple:
    return (idp.updated_at, idp.legacy_crypto, tuple(k.fingerprint_sha256 for k in keys.decryption_keys()))


def client_for(idp: IdentityProvider) -> tuple[Saml2Client, TrackingBackend]:
    """The cached pysaml2 client for ``idp`` and its crypto backend."""
    version = _version(idp)
    cached = _cache.get(idp.pk)
    if cached is None or cached.version != version:
        # Same XSDs as pysaml2's pure-Python validator, validated by libxml2 (~40x faster).
        schema.install()
        config = build_config(idp)
        client = Saml2Client(config=config)
        backend = TrackingBackend(allow_legacy=idp.legacy_crypto)
        client.sec.crypto = backend
        # Same checks as pysaml2's SecurityContext, on the received document (security.py).
        client.sec.__class__ = FastSecurityContext
        # HTTP-Redirect signatures (AuthnRequest, LogoutRequest) are plain RSA signatures
        # over the query string, made with `cryptography` through pysaml2's RSACrypto.
        client.sec.sec_backend = RSACrypto(import_rsa_key_from_file(config.key_file))
        cached = _Cached(version=version, client=client, backend=backend)
        with _lock:
            _cache[idp.pk] = cached
    # pysaml2 remembers every person it saw in an in-memory cache that only grows; our own
    # session keeps what single logout needs, so start each use with an empty one.
    cached.client.users = Population()
    return cached.client, cached.backend


def idp_entity_id(idp: IdentityProvider) -> str:
    return idp.config["entity_id"]
