"""Our SP metadata towards one IdP: entity ID, ACS/SLO endpoints, current and next keys.

Publishing the *next* key before a rotation lets IdPs pick it up without downtime
(``keys rotate``); the document is signed with the current key.
"""

from __future__ import annotations

from saml2.md import KeyDescriptor
from saml2.metadata import entity_descriptor, sign_entity_descriptor
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256, KeyInfo, X509Certificate, X509Data

from broker import keys
from broker.models import IdentityProvider

from .client import client_for


def _key_descriptor(cert_b64: str, use: str) -> KeyDescriptor:
    return KeyDescriptor(
        use=use,
        key_info=KeyInfo(x509_data=[X509Data(x509_certificate=X509Certificate(text=cert_b64))]),
    )


def sp_metadata(idp: IdentityProvider) -> str:
    """Signed SAML metadata for our SP as seen by ``idp`` (XML text)."""
    client, _backend = client_for(idp)
    config = client.config
    config.valid_for = 24 * 7  # hours: IdPs that honour validUntil refresh weekly
    descriptor = entity_descriptor(config)
    sp = descriptor.spsso_descriptor
    published = keys.published()
    sp.key_descriptor = [
        _key_descriptor(pair.cert_b64, use) for pair in published for use in ("signing", "encryption")
    ]
    _signed, xml = sign_entity_descriptor(
        descriptor, None, client.sec, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
    )
    return xml
