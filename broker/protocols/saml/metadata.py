"""IdP metadata: fetch, verify, parse, register, refresh (last-known-good); our SP metadata.

Metadata is trust configuration: the IdP's signing certificates come only from here (never
from a response's KeyInfo). When a metadata-signing certificate is configured, the
document's signature must verify with it; an unsigned (stripped) copy is refused.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from lxml import etree
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.mdstore import InMemoryMetaData, MetadataStore
from saml2.s_utils import UnsupportedBinding
from saml2.time_util import str_to_time

from broker import audit
from broker.models import IdentityProvider

from .crypto import InProcessCryptoBackend
from .xmlguard import XmlRefused, check_no_doctype, safe_parser

MAX_METADATA_BYTES = 10 * 1024 * 1024
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
BINDINGS = {"redirect": BINDING_HTTP_REDIRECT, "post": BINDING_HTTP_POST}


class MetadataError(Exception):
    """Metadata could not be fetched, verified or used; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class IdpMetadata:
    entity_id: str
    sso: dict[str, str]
    slo: dict[str, str]
    signing_certs: tuple[str, ...]
    encryption_certs: tuple[str, ...]
    valid_until: str | None
    signed: bool
    fingerprints: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        """What the audit log records about a metadata version (no XML)."""
        data = asdict(self)
        data.pop("signing_certs")
        data.pop("encryption_certs")
        return data


def fingerprint(cert_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(cert_b64)).hexdigest()


def _pem(cert_b64: str) -> str:
    body = "\n".join(cert_b64[i:i + 64] for i in range(0, len(cert_b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def _verify_signature(xml: bytes, root: etree._Element, cert_pem: str, allow_legacy: bool) -> None:
    signature = root.find(f"{{{DS_NS}}}Signature")
    if signature is None:
        raise MetadataError("metadata_unsigned", "a signing certificate is configured but the "
                            "metadata carries no signature (stripped?)")
    node_id = root.get("ID")
    if not node_id:
        raise MetadataError("metadata_signature", "signed root element has no ID")
    node_name = f"{MD_NS}:{etree.QName(root).localname}"
    backend = InProcessCryptoBackend(allow_legacy=allow_legacy)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as cert_file:
        cert_file.write(cert_pem)
        cert_file.flush()
        try:
            ok = backend.validate_signature(xml, cert_file.name, "pem", node_name, node_id)
        except Exception as exc:  # xmlsec/structure errors: all mean "not verified"
            raise MetadataError("metadata_signature", type(exc).__name__) from exc
    if not ok:
        raise MetadataError("metadata_signature", "signature does not verify")


def parse(xml: bytes | str, *, entity_id: str | None = None, signing_cert_pem: str | None = None,
          allow_legacy: bool = False) -> IdpMetadata:
    """Verify (when a signing certificate is given) and parse IdP metadata."""
    data = xml.encode() if isinstance(xml, str) else xml
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError("metadata_too_large", f"{len(data)} bytes")
    try:
        check_no_doctype(data)
        root = etree.fromstring(data, parser=safe_parser())
    except (XmlRefused, etree.XMLSyntaxError) as exc:
        raise MetadataError("metadata_malformed", str(exc)) from exc
    if etree.QName(root).namespace != MD_NS:
        raise MetadataError("metadata_malformed", "not SAML 2.0 metadata")
    signed = root.find(f"{{{DS_NS}}}Signature") is not None
    if signing_cert_pem:
        _verify_signature(data, root, signing_cert_pem, allow_legacy)

    # validUntil is judged by us (is_expired), so an expired copy can still be inspected.
    document = InMemoryMetaData([], data.decode("utf-8"), check_validity=False)
    try:
        document.load()
    except Exception as exc:
        raise MetadataError("metadata_malformed", type(exc).__name__) from exc
    store = MetadataStore([], None)
    store.metadata["document"] = document
    idps = list(store.identity_providers())
    if entity_id:
        if entity_id not in idps:
            raise MetadataError("metadata_entity", f"no IdP {entity_id!r} in the metadata")
        chosen = entity_id
    elif len(idps) == 1:
        chosen = idps[0]
    else:
        raise MetadataError("metadata_entity", f"{len(idps)} IdPs in the metadata: name one "
                            "with --entity-id")

    sso = _endpoints(store.single_sign_on_service, chosen)
    slo = _endpoints(lambda eid, b: store.single_logout_service(eid, b, "idpsso"), chosen)
    signing = tuple(dict.fromkeys(c for _, c in store.certs(chosen, "idpsso", "signing")))
    encryption = tuple(dict.fromkeys(c for _, c in store.certs(chosen, "idpsso", "encryption")))
    if not sso:
        raise MetadataError("metadata_endpoints", "no SingleSignOnService with HTTP-Redirect/POST")
    if not signing:
        raise MetadataError("metadata_keys", "no signing certificate for the IdP")
    valid_until = _valid_until(root, chosen)
    return IdpMetadata(
        entity_id=chosen, sso=sso, slo=slo, signing_certs=signing, encryption_certs=encryption,
        valid_until=valid_until, signed=signed, fingerprints=tuple(fingerprint(c) for c in signing),
    )


def _endpoints(lookup, entity_id: str) -> dict[str, str]:
    found = {}
    mdstore_log = logging.getLogger("saml2.mdstore")
    for name, binding in BINDINGS.items():
        # pysaml2 logs an ERROR before raising UnsupportedBinding; a binding the IdP does
        # not offer is normal here, not an error for operators to chase.
        previous = mdstore_log.disabled
        mdstore_log.disabled = True
        try:
            services = lookup(entity_id, binding)
        except UnsupportedBinding:
            continue
        finally:
            mdstore_log.disabled = previous
        if services:
            found[name] = services[0]["location"]
    return found


def _valid_until(root: etree._Element, entity_id: str) -> str | None:
    """The earliest validUntil on the path from the root to the chosen entity."""
    stamps = [root.get("validUntil")]
    for ed in root.iter(f"{{{MD_NS}}}EntityDescriptor"):
        if ed.get("entityID") == entity_id:
            stamps.append(ed.get("validUntil"))
    parsed = [datetime(*str_to_time(s)[:6], tzinfo=UTC) for s in stamps if s]
    return min(parsed).isoformat() if parsed else None


def is_expired(valid_until: str | None, now: datetime | None = None) -> bool:
    if not valid_until:
        return False
    return datetime.fromisoformat(valid_until) <= (now or timezone.now())


def fetch(url: str, *, ca_file: str | None = None) -> bytes:
    """GET ``url`` with a timeout and a size cap. Raises ``MetadataError``."""
    if not url.startswith(("https://", "http://")):
        raise MetadataError("metadata_url", "only http(s) URLs")
    try:
        with requests.get(url, timeout=settings.SAML_METADATA_FETCH_TIMEOUT, stream=True,
                          verify=ca_file or True) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > MAX_METADATA_BYTES:
                    raise MetadataError("metadata_too_large", f"over {MAX_METADATA_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.exceptions.SSLError as exc:
        raise MetadataError("OIDC_CERT_ERR", "untrusted TLS certificate chain") from exc
    except requests.RequestException as exc:
        raise MetadataError("idp_unavailable", type(exc).__name__) from exc


def certificate_not_after(cert_b64: str) -> str | None:
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64))
    except ValueError:
        return None
    return cert.not_valid_after_utc.isoformat()


def _apply(config: dict, md: IdpMetadata, xml: bytes) -> dict:
    updated = dict(config)
    expiries = [e for e in (certificate_not_after(c) for c in md.signing_certs) if e]
    updated.update({
        "entity_id": md.entity_id,
        "metadata_xml": xml.decode("utf-8"),
        "metadata_valid_until": md.valid_until,
        "metadata_fetched_at": timezone.now().isoformat(),
        "sso": md.sso,
        "slo": md.slo,
        "signing_cert_fingerprints": list(md.fingerprints),
        # The latest expiry among the signing certificates: logins work until then.
        "signing_cert_not_after": max(expiries) if expiries else None,
    })
    return updated


def register(
    slug: str, *, name: str = "", metadata_xml: bytes | None = None, metadata_url: str | None = None,
    entity_id: str | None = None, signing_cert_pem: str | None = None, options: dict | None = None,
    legacy_crypto: bool = False, jit_allowed: bool = True, subject_source: str = "",
    clock_skew_seconds: int | None = None, attribute_map: dict | None = None, enabled: bool = True,
    actor: str | None = None, via: str = "cli",
) -> IdentityProvider:
    """Register a SAML IdP from its metadata (file contents or URL). Audited."""
    if (metadata_xml is None) == (metadata_url is None):
        raise ValidationError("give exactly one of metadata XML or a metadata URL")
    xml = metadata_xml if metadata_xml is not None else fetch(metadata_url or "")
    md = parse(xml, entity_id=entity_id, signing_cert_pem=signing_cert_pem, allow_legacy=legacy_crypto)
    if is_expired(md.valid_until):
        raise MetadataError("metadata_expired", f"validUntil {md.valid_until} is in the past")
    config: dict[str, Any] = {
        "metadata_url": metadata_url or "",
        "metadata_signing_cert": signing_cert_pem or "",
        **(options or {}),
    }
    idp = IdentityProvider(
        slug=slug, name=name or slug, protocol=IdentityProvider.Protocol.SAML, enabled=enabled,
        config=_apply(config, md, xml), attribute_map=attribute_map or {},
        subject_source=subject_source, jit_allowed=jit_allowed,
        clock_skew_seconds=clock_skew_seconds, legacy_crypto=legacy_crypto,
    )
    idp.full_clean()
    with transaction.atomic():
        idp.save()
        audit.record("idp.created", actor=actor, via=via, idp=slug, after=idp.summary(),
                     metadata=md.describe())
        if legacy_crypto:
            audit.record("idp.legacy_crypto_enabled", actor=actor, via=via, idp=slug,
                         reason="legacy_crypto")
    return idp


@dataclass(frozen=True)
class RefreshResult:
    changed: bool
    error: str = ""
    changes: dict = field(default_factory=dict)


def refresh(idp: IdentityProvider, *, actor: str | None = None, via: str = "cli") -> RefreshResult:
    """Fetch the IdP's metadata URL again. On any failure keep the last-known-good copy and
    audit the failure; on success audit what changed (keys, endpoints, validity)."""
    url = idp.config.get("metadata_url")
    if not url:
        return RefreshResult(changed=False, error="no metadata URL (registered from a file)")
    try:
        xml = fetch(url, ca_file=idp.config.get("metadata_ca_file") or None)
        md = parse(xml, entity_id=idp.config.get("entity_id"),
                   signing_cert_pem=idp.config.get("metadata_signing_cert") or None,
                   allow_legacy=idp.legacy_crypto)
        if is_expired(md.valid_until):
            raise MetadataError("metadata_expired", f"validUntil {md.valid_until}")
    except MetadataError as exc:
        audit.record("idp.metadata_refresh_failed", outcome="failure", actor=actor, via=via,
                     idp=idp.slug, reason=exc.reason, detail=exc.detail[:300])
        return RefreshResult(changed=False, error=str(exc))
    old = idp.config
    changes = {}
    old_fps, new_fps = set(old.get("signing_cert_fingerprints", [])), set(md.fingerprints)
    if old_fps != new_fps:
        changes["signing_keys_added"] = sorted(new_fps - old_fps)
        changes["signing_keys_removed"] = sorted(old_fps - new_fps)
    for key, value in (("sso", md.sso), ("slo", md.slo), ("metadata_valid_until", md.valid_until)):
        if old.get(key) != value:
            changes[key] = {"before": old.get(key), "after": value}
    if old.get("metadata_xml") != xml.decode("utf-8") or changes:
        with transaction.atomic():
            idp.config = _apply(old, md, xml)
            idp.save(update_fields=["config", "updated_at"])
            audit.record("idp.metadata_changed", actor=actor, via=via, idp=idp.slug, changes=changes)
        return RefreshResult(changed=True, changes=changes)
    return RefreshResult(changed=False)
