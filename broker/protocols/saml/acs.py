"""The assertion consumer: a POSTed SAML Response in, a verified ``Principal`` out.

pysaml2 verifies (signatures through our in-process backend, conditions, subject
confirmation, InResponseTo); this module adds what it skips or swallows, and reads the
identity only from what pysaml2 verified (``name_id``, ``ava``): never from the raw XML.
Each refusal is one ``LoginError`` code (broker/errors.py).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import logging
from datetime import UTC, datetime

from django.core.cache import cache
from django.http import HttpRequest
from saml2 import BINDING_HTTP_POST
from saml2.response import (
    DecryptionFailed,
    IncorrectlySigned,
    InvalidAssertion,
    StatusError,
    UnsolicitedResponse,
    VerificationError,
)
from saml2.saml import NAMEID_FORMAT_TRANSIENT
from saml2.sigver import DecryptError, MissingKey, SignatureError, SigverError
from saml2.time_util import str_to_time
from saml2.validate import ResponseLifetimeExceed, ToEarly
from saml2.xml.schema import XMLSchemaError

from broker import loginstate
from broker.errors import LoginError
from broker.models import IdentityProvider
from broker.principal import Principal, normalize_attributes

from .client import acs_url, client_for, idp_entity_id, sp_entity_id
from .crypto import Refused, WeakAlgorithm
from .security import received_document_validated, validate_received
from .xmlguard import XmlRefused, check_no_doctype

logger = logging.getLogger("broker.saml")

ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
# NameID formats stable enough to be an identity (a transient NameID never is).
SUBJECT_FORMATS = {
    None,
    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
}
REPLAY_PREFIX = "saml:seen"


def _error_for(exc: Exception, *, solicited: bool) -> LoginError:
    """Translate what pysaml2 raised into our reason code."""
    text = str(exc)
    if isinstance(exc, WeakAlgorithm):
        return LoginError("saml_weak_algorithm", text[:200])
    if isinstance(exc, XmlRefused) or getattr(exc, "code", "") == "xml_doctype":
        return LoginError("saml_doctype")
    if isinstance(exc, Refused):
        # Signature wrapping (duplicate IDs), forbidden transforms, encryption structure.
        return LoginError("invalid_signature", getattr(exc, "code", type(exc).__name__))
    if isinstance(exc, UnsolicitedResponse) or "requestURI I don't recall" in text or text == "Came from":
        return LoginError("saml_in_response_to" if solicited else "saml_unsolicited")
    if isinstance(exc, ToEarly):
        return LoginError("token_not_yet_valid", text[:200])
    if isinstance(exc, ResponseLifetimeExceed):
        return LoginError("token_expired", text[:200])
    if "AudienceRestrictions" in text:
        return LoginError("saml_audience")
    if isinstance(exc, VerificationError) and "recipient" in text:
        return LoginError("saml_destination", "Recipient")
    if isinstance(exc, VerificationError) and "subject confirmation" in text:
        return LoginError("saml_subject_confirmation")
    if isinstance(exc, StatusError):
        return LoginError("saml_status", text.splitlines()[-1][:200] if text else "")
    if isinstance(exc, InvalidAssertion):
        return LoginError("saml_assertion_count")
    if isinstance(exc, (DecryptError, DecryptionFailed)):
        return LoginError("saml_decrypt", text[:200])
    if "Neither the response nor the assertions are signed" in text:
        return LoginError("saml_unsigned")
    if isinstance(exc, (SignatureError, SigverError, MissingKey, IncorrectlySigned)):
        return LoginError("invalid_signature", type(exc).__name__)
    return LoginError("saml_malformed", f"{type(exc).__name__}: {text[:200]}")


def _decode(request: HttpRequest) -> tuple[str, bytes]:
    encoded = request.POST.get("SAMLResponse", "")
    if not encoded:
        raise LoginError("saml_malformed", "no SAMLResponse")
    try:
        decoded = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        raise LoginError("saml_malformed", "SAMLResponse is not base64") from None
    try:
        check_no_doctype(decoded)
    except XmlRefused:
        raise LoginError("saml_doctype") from None
    return encoded, decoded


def _not_on_or_after(assertion, skew: int) -> int:
    """Seconds until the assertion can no longer be used (for the replay cache TTL)."""
    stamps = []
    if assertion.conditions is not None and assertion.conditions.not_on_or_after:
        stamps.append(assertion.conditions.not_on_or_after)
    for sc in assertion.subject.subject_confirmation if assertion.subject else []:
        data = sc.subject_confirmation_data
        if data is not None and data.not_on_or_after:
            stamps.append(data.not_on_or_after)
    now = datetime.now(UTC).timestamp()
    if not stamps:
        return 300 + skew
    latest = max(calendar.timegm(str_to_time(s)) for s in stamps)
    return max(int(latest - now) + skew, 1)


def _check_replay(assertion_id: str, ttl: int) -> None:
    """One use per assertion ID until it expires: SET NX in Redis (fail closed)."""
    if not cache.add(f"{REPLAY_PREFIX}:{assertion_id}", 1, timeout=ttl):
        raise LoginError("saml_replay", assertion_id[:80])


def _subject(resp, idp: IdentityProvider, attributes: dict) -> str:
    if idp.subject_source:
        values = attributes.get(idp.subject_source) or ()
        if len(values) != 1 or not values[0].strip():
            raise LoginError("invalid_principal", f"attribute {idp.subject_source!r} missing or multi-valued")
        return values[0]
    name_id = resp.name_id
    if name_id is None or not (name_id.text or "").strip():
        raise LoginError("invalid_principal", "no NameID")
    if name_id.format == NAMEID_FORMAT_TRANSIENT or name_id.format not in SUBJECT_FORMATS:
        raise LoginError("invalid_principal", f"NameID format {name_id.format} is not a stable subject")
    return name_id.text.strip()


def verify_response(client, backend, encoded: str, decoded: bytes, outstanding: dict, *,
                    acs: str, solicited: bool = True):
    """Schema-validate the received bytes once, then let pysaml2 verify. Returns pysaml2's
    response and which signed elements verified. Raises ``LoginError``."""
    try:
        validate_received(decoded)
    except XMLSchemaError as exc:
        raise LoginError("saml_malformed", "not valid against the SAML schemas") from exc
    backend.reset_results()
    try:
        # conv_info makes pysaml2 check SubjectConfirmationData/@Recipient (without it,
        # verify_recipient accepts anything): the signed Recipient must be our ACS URL.
        with received_document_validated():
            resp = client.parse_authn_request_response(
                encoded, BINDING_HTTP_POST, outstanding=outstanding, conv_info={"entity_id": acs})
    except Exception as exc:  # every pysaml2 failure becomes a named refusal
        raise _error_for(exc, solicited=solicited) from exc
    if resp is None:
        raise LoginError("saml_malformed", "not an authentication response")
    return resp, backend.results()


def complete(request: HttpRequest, idp: IdentityProvider) -> tuple[Principal, str, dict]:
    """Verify the POSTed Response for ``idp``; return (principal, next URL, session data)."""
    from broker.redirects import safe_next

    from . import metadata

    if metadata.is_expired(idp.config.get("metadata_valid_until")):
        raise LoginError("idp_metadata_expired")
    encoded, _decoded = _decode(request)
    relay_state = request.POST.get("RelayState", "")
    pending = None
    if relay_state and not relay_state.startswith("/") and loginstate.looks_like_handle(relay_state):
        pending = loginstate.take(request, "saml", relay_state)
        if pending.get("idp") != idp.slug:
            raise LoginError("saml_in_response_to", "pending login was for another IdP")
    elif not idp.config.get("allow_unsolicited"):
        raise LoginError("saml_unsolicited")
    outstanding = {pending["request_id"]: pending["next"]} if pending else {}

    client, backend = client_for(idp)
    resp, results = verify_response(client, backend, encoded, _decoded, outstanding, acs=acs_url(idp),
                                    solicited=pending is not None)
    if any(not ok for ok in results.values()):
        # pysaml2 ignores a bad Response signature when it does not require one: we don't.
        raise LoginError("invalid_signature", "a signature in the response does not verify")

    response = resp.response
    issuer = idp_entity_id(idp)
    if response.destination != acs_url(idp):
        raise LoginError("saml_destination", "Destination")
    if resp.response.encrypted_assertion:
        raise LoginError("saml_decrypt", "an encrypted assertion could not be decrypted")
    if len(resp.assertions) != 1 or resp.assertion is None or resp.ava is None:
        raise LoginError("saml_assertion_count", f"{len(resp.assertions)} usable assertion(s)")
    assertion = resp.assertion
    if response.issuer is not None and (response.issuer.text or "").strip() != issuer:
        raise LoginError("saml_issuer", "Response Issuer")
    if assertion.issuer is None or (assertion.issuer.text or "").strip() != issuer:
        raise LoginError("saml_issuer", "Assertion Issuer")
    # Every signature present must have verified (pysaml2 swallows a failed Response
    # signature when it does not require one), and one of them must cover the assertion.
    assertion_ok = results.get((ASSERTION, assertion.id))
    response_ok = results.get((RESPONSE, response.id))
    if (response.signature is not None and not response_ok) or (
        assertion.signature is not None and not assertion_ok
    ):
        raise LoginError("invalid_signature", "a signature in the response does not verify")
    if not (assertion_ok or response_ok):
        raise LoginError("saml_unsigned")
    conditions = assertion.conditions
    audiences = [
        (a.text or "").strip()
        for restriction in (conditions.audience_restriction if conditions else [])
        for a in restriction.audience
    ]
    if sp_entity_id(idp) not in audiences:
        raise LoginError("saml_audience", "no AudienceRestriction naming this SP")
    if pending and resp.in_response_to != pending["request_id"]:
        raise LoginError("saml_in_response_to")
    if not pending and resp.in_response_to:
        # An answer to a request this browser no longer has (expired, other browser).
        raise LoginError("saml_in_response_to", "InResponseTo without a pending login")

    _check_replay(f"{issuer}|{assertion.id}", _not_on_or_after(assertion, idp.clock_skew))

    attributes = normalize_attributes(resp.ava, idp.attribute_map)
    subject = _subject(resp, idp, attributes)
    authn = assertion.authn_statement[0] if assertion.authn_statement else None
    context = authn.authn_context if authn is not None else None
    class_ref = getattr(getattr(context, "authn_context_class_ref", None), "text", None)
    instant = None
    if authn is not None and authn.authn_instant:
        instant = datetime(*str_to_time(authn.authn_instant)[:6], tzinfo=UTC)
    try:
        principal = Principal(
            idp=idp.slug, protocol="saml", subject=subject, issuer=issuer, attributes=attributes,
            authn_instant=instant, authn_context=class_ref,
            session_index=authn.session_index if authn is not None else None,
        )
    except ValueError as exc:
        raise LoginError("invalid_principal", str(exc)) from exc
    name_id = resp.name_id
    session_data = {
        "saml_name_id": {
            "text": name_id.text, "format": name_id.format, "name_qualifier": name_id.name_qualifier,
            "sp_name_qualifier": name_id.sp_name_qualifier,
        } if name_id is not None else None,
    }
    next_url = pending["next"] if pending else safe_next(relay_state)
    if pending and pending.get("mode") == "test":
        session_data["test_mode"] = True  # an admin's test login: show, change nothing
    return principal, next_url, session_data
