"""SAML Single Logout (saml-profiles 4.4) over HTTP-Redirect and HTTP-POST.

* ``begin_logout``: after the local session ended, a signed LogoutRequest to the IdP; its ID
  waits in ``broker.loginstate`` (kind ``saml-slo``) under the RelayState handle.
* ``complete_logout``: the IdP's LogoutResponse to it (signed, from the IdP, to us, answering
  the pending request) and where the browser goes next.
* ``receive_logout_request`` / ``logout_reply``: a verified IdP-initiated LogoutRequest (the
  view ends the sessions) and our signed LogoutResponse to it.

pysaml2 verifies XML signatures (through our in-process backend) but, as an SP, requires no
signature on logout messages and checks neither HTTP-Redirect query signatures nor a
response's Destination, IssueInstant or NotOnOrAfter: this module does. Query signatures are
verified over the raw query string as received (saml-bindings 3.4.4.1), so IdPs that
percent-encode differently (ADFS: lower-case hex) still verify.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2.cert import CertificateError
from saml2.client import Saml2Client
from saml2.response import IncorrectlySigned, LogoutResponse
from saml2.s_utils import status_message_factory, success_status_factory
from saml2.saml import NameID
from saml2.sigver import SIGNER_ALGS, SigverError, extract_rsa_key_from_x509_cert, pem_format
from saml2.time_util import in_a_while, str_to_time
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256, SIG_RSA_SHA384, SIG_RSA_SHA512

from broker import loginstate
from broker.errors import LoginError, register
from broker.models import IdentityProvider
from broker.redirects import safe_next

from . import metadata
from .client import client_for, idp_entity_id, slo_url
from .crypto import Refused, WeakAlgorithm
from .xmlguard import XmlRefused, check_no_doctype

logger = logging.getLogger("broker.saml")

STATE_KIND = "saml-slo"
REPLAY_PREFIX = "saml:slo-seen"
_BINDINGS = {"redirect": BINDING_HTTP_REDIRECT, "post": BINDING_HTTP_POST}
_SIG_ALGS = frozenset({SIG_RSA_SHA256, SIG_RSA_SHA384, SIG_RSA_SHA512})
_MAX_XML = 1024 * 1024  # an inflated message larger than this is refused (deflate bombs)
_MAX_RELAY_STATE = 1024  # saml-bindings says 80 bytes; be lenient, but never echo a novel
_NAME_ID_FIELDS = ("text", "format", "name_qualifier", "sp_name_qualifier")

register("saml_slo_unsigned", 400, "Unsigned SAML logout message",
         "Single logout messages must be signed: a query signature (SigAlg, Signature) on "
         "HTTP-Redirect, an XML signature on HTTP-POST. Check the IdP's SLO signing settings.")
register("saml_slo_unsupported", 400, "SAML logout message not supported",
         "The logout message names its subject in a way the broker does not handle (e.g. an "
         "encrypted NameID) or the session holds no NameID to log out.")


class SloError(LoginError):
    """A refused single-logout message. ``reply``: a signed failure LogoutResponse for the IdP,
    if we know where to send it; ``next_url``: where a browser awaiting our logout's answer goes."""

    def __init__(self, error: LoginError, *, reply: HttpResponse | None = None, next_url: str = "") -> None:
        super().__init__(error.code, error.detail, status=error.status)
        self.reply = reply
        self.next_url = next_url


@dataclass(frozen=True)
class LogoutResult:
    """The IdP's answer to our LogoutRequest: where the browser goes, and did the IdP succeed."""

    next_url: str
    success: bool
    status: str


@dataclass(frozen=True)
class IncomingLogout:
    """A verified IdP-initiated LogoutRequest: whom to log out, and what to answer."""

    subject: str
    session_indexes: tuple[str, ...]
    request_id: str
    binding: str
    relay_state: str
    message: Any = field(repr=False, compare=False)


def logout_message_kind(request: HttpRequest) -> str:
    """``request`` (IdP-initiated), ``response`` (answer to ours) or ``""`` (neither)."""
    data = request.POST if request.method == "POST" else request.GET
    return "request" if data.get("SAMLRequest") else "response" if data.get("SAMLResponse") else ""


# -- SP-initiated ---------------------------------------------------------------------------


def begin_logout(request: HttpRequest, idp: IdentityProvider, *, name_id: dict | None, session_index: str,
                 next_url: str) -> HttpResponse | None:
    """Redirect (or auto-POST) the browser to the IdP's SLO endpoint with a signed LogoutRequest.

    Returns None when the IdP publishes no SLO endpoint. The NameID comes from our own
    session (pysaml2's user cache is emptied on every use, see client_for). Raises on any
    failure: the caller has already ended the local session and only loses the IdP's.
    """
    endpoints = idp.config.get("slo") or {}
    name = "redirect" if endpoints.get("redirect") else "post" if endpoints.get("post") else ""
    if not name:
        return None
    if metadata.is_expired(idp.config.get("metadata_valid_until")):
        raise LoginError("idp_metadata_expired")
    if not name_id or not (name_id.get("text") or "").strip():
        raise LoginError("saml_slo_unsupported", "the session holds no NameID")
    binding, destination = _BINDINGS[name], endpoints[name]
    post = binding == BINDING_HTTP_POST
    client, _backend = client_for(idp)
    handle = loginstate.new_handle()
    request_id, message = client.create_logout_request(
        destination, idp_entity_id(idp), name_id=NameID(**{k: name_id.get(k) for k in _NAME_ID_FIELDS}),
        session_indexes=[session_index] if session_index else None,
        expire=in_a_while(seconds=settings.LOGIN_STATE_TTL), sign=post,
        sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
    )
    info = client.apply_binding(binding, str(message), destination, relay_state=handle, sign=not post,
                                sigalg=SIG_RSA_SHA256)
    response = _http(info, binding)
    loginstate.begin(request, response, STATE_KIND, handle,
                     {"idp": idp.slug, "request_id": request_id, "next": next_url})
    return response


def complete_logout(request: HttpRequest, idp: IdentityProvider) -> LogoutResult:
    """Verify the IdP's LogoutResponse to the logout this browser started.

    Raises ``SloError``; its ``next_url`` is set once the pending logout is known, so the
    browser still lands where it wanted to go (the local session ended long before).
    """
    binding, encoded, relay_state = _incoming(request, "SAMLResponse")
    if not loginstate.looks_like_handle(relay_state):
        raise SloError(LoginError("state_mismatch", "LogoutResponse without our RelayState handle"))
    try:
        pending = loginstate.take(request, STATE_KIND, relay_state)
    except LoginError as exc:
        raise SloError(exc) from None
    next_url = safe_next(pending.get("next"))
    try:
        if pending.get("idp") != idp.slug:
            raise LoginError("saml_in_response_to", "the pending logout was for another IdP")
        client, _backend = client_for(idp)
        xml = _unpack(encoded, binding)
        if binding == BINDING_HTTP_REDIRECT:
            _verify_query_signature(request, idp, client, "SAMLResponse")
        parsed = LogoutResponse(client.sec, return_addrs=[slo_url(idp)], timeslack=idp.clock_skew)
        parsed.require_signature = binding == BINDING_HTTP_POST  # pysaml2 then refuses unsigned
        try:
            parsed = parsed.loads(xml, False, origxml=xml)
        except Exception as exc:  # every pysaml2 failure becomes a named refusal
            raise _error_for(exc) from exc
        message = parsed.response if parsed is not None else None
        if message is None:
            raise LoginError("saml_malformed", "not a valid LogoutResponse")
        _check_message(message, idp, "LogoutResponse")
        if message.in_response_to != pending.get("request_id"):
            raise LoginError("saml_in_response_to", "LogoutResponse answers another request")
        codes = _status_codes(message)
    except LoginError as exc:
        raise SloError(exc, next_url=next_url) from exc
    return LogoutResult(next_url=next_url, success=codes == [samlp.STATUS_SUCCESS], status=" ".join(codes))


# -- IdP-initiated --------------------------------------------------------------------------


def receive_logout_request(request: HttpRequest, idp: IdentityProvider) -> IncomingLogout:
    """Verify an IdP-initiated LogoutRequest (signature required, issuer, destination, time,
    one use). On refusal raise ``SloError`` with a signed failure reply for the IdP when the
    message at least claims to come from it (it goes to the IdP's metadata endpoint only)."""
    binding, encoded, relay_state = _incoming(request, "SAMLRequest")
    relay_state = relay_state if len(relay_state) <= _MAX_RELAY_STATE else ""
    client, _backend = client_for(idp)
    peek = None
    try:
        xml = _unpack(encoded, binding)
        peek = _peek(xml, idp)
        if binding == BINDING_HTTP_REDIRECT:
            _verify_query_signature(request, idp, client, "SAMLRequest")
        try:
            parsed = client.parse_logout_request(encoded, binding)
        except Exception as exc:  # every pysaml2 failure becomes a named refusal
            raise _error_for(exc) from exc
        message = parsed.message if parsed is not None else None
        if message is None:
            raise LoginError("saml_malformed", "not a valid LogoutRequest")
        if binding == BINDING_HTTP_POST and message.signature is None:
            # pysaml2 verified a signature if there was one; an SP never requires it there.
            raise LoginError("saml_slo_unsigned", "LogoutRequest without XML signature")
        _check_message(message, idp, "LogoutRequest")
        if message.not_on_or_after and _epoch(message.not_on_or_after) <= time.time() - idp.clock_skew:
            raise LoginError("token_expired", "LogoutRequest NotOnOrAfter has passed")
        if message.name_id is None or not (message.name_id.text or "").strip():
            raise LoginError("saml_slo_unsupported", "no plain NameID (BaseID/EncryptedID)")
        ttl = settings.LOGIN_STATE_TTL + 2 * idp.clock_skew
        if not cache.add(f"{REPLAY_PREFIX}:{idp_entity_id(idp)}|{message.id}", 1, timeout=ttl):
            raise LoginError("saml_replay", f"LogoutRequest {message.id[:80]}")
    except LoginError as exc:
        reply = None
        if peek is not None:
            status = status_message_factory(exc.code, samlp.STATUS_REQUEST_DENIED, samlp.STATUS_REQUESTER)
            try:
                reply = _reply(client, idp, peek, status, binding, relay_state)
            except Exception:  # the refusal stands; the IdP just gets no answer
                logger.exception("could not build a failure LogoutResponse for idp=%s", idp.slug)
        raise SloError(exc, reply=reply) from exc
    return IncomingLogout(
        subject=message.name_id.text.strip(),
        session_indexes=tuple(si.text.strip() for si in message.session_index if (si.text or "").strip()),
        request_id=message.id, binding=binding, relay_state=relay_state, message=message,
    )


def logout_reply(idp: IdentityProvider, incoming: IncomingLogout, *, ok: bool = True,
                 detail: str = "") -> HttpResponse | None:
    """Our signed LogoutResponse to ``incoming`` (Success, or Responder when we could not log
    the principal out), in the binding it came with if the IdP offers it; None if it has no
    SLO endpoint at all."""
    client, _backend = client_for(idp)
    status = success_status_factory() if ok else status_message_factory(
        detail or "logout failed", samlp.STATUS_UNKNOWN_PRINCIPAL, samlp.STATUS_RESPONDER)
    return _reply(client, idp, incoming.message, status, incoming.binding, incoming.relay_state)


# -- helpers --------------------------------------------------------------------------------


def _incoming(request: HttpRequest, param: str) -> tuple[str, str, str]:
    data = request.POST if request.method == "POST" else request.GET
    binding = BINDING_HTTP_POST if request.method == "POST" else BINDING_HTTP_REDIRECT
    return binding, data.get(param, ""), data.get("RelayState", "")


def _unpack(encoded: str, binding: str) -> bytes:
    """base64 (+ DEFLATE) to XML with a size cap, refusing a DOCTYPE before any parser runs."""
    if not encoded:
        raise LoginError("saml_malformed", "empty SAML message")
    if len(encoded) > settings.SAML_MAX_POST_BYTES:
        raise LoginError("saml_too_large")
    try:
        raw = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError):
        raise LoginError("saml_malformed", "not base64") from None
    xml = raw
    if binding == BINDING_HTTP_REDIRECT or not raw.lstrip().startswith(b"<"):
        inflater = zlib.decompressobj(-15)  # pysaml2 also accepts DEFLATEd POST bodies
        try:
            xml = inflater.decompress(raw, _MAX_XML)
        except zlib.error:
            raise LoginError("saml_malformed", "not DEFLATE-encoded") from None
        if inflater.unconsumed_tail:
            raise LoginError("saml_too_large", "inflated message over the limit")
    try:
        check_no_doctype(xml)
    except XmlRefused:
        raise LoginError("saml_doctype") from None
    return xml


def _verify_query_signature(request: HttpRequest, idp: IdentityProvider, client: Saml2Client,
                            param: str) -> None:
    """HTTP-Redirect: the signature covers ``param&RelayState&SigAlg`` exactly as sent, and
    must verify with a signing certificate of this IdP's metadata (never one it sends)."""
    raw: dict[str, str] = {}
    for part in request.META.get("QUERY_STRING", "").split("&"):
        name, _sep, value = part.partition("=")
        name = unquote_plus(name)  # "SAML%52equest" is a SAMLRequest to Django: a second one
        if name in (param, "RelayState", "SigAlg", "Signature"):
            if name in raw:
                raise LoginError("saml_malformed", f"{name} given twice")
            raw[name] = value
    if "Signature" not in raw or "SigAlg" not in raw:
        raise LoginError("saml_slo_unsigned", "HTTP-Redirect message without a query signature")
    if request.GET.getlist(param) != [unquote_plus(raw[param])]:  # what pysaml2 reads is what we verify
        raise LoginError("saml_malformed", f"{param} is ambiguous")
    sig_alg = unquote_plus(raw["SigAlg"])
    if sig_alg not in _SIG_ALGS | ({SIG_RSA_SHA1} if idp.legacy_crypto else set()):
        raise LoginError("saml_weak_algorithm", f"SigAlg {sig_alg[:100]}")
    try:
        parts = (f"{k}={raw[k]}" for k in (param, "RelayState", "SigAlg") if k in raw)
        signed = "&".join(parts).encode("latin-1")
        signature = base64.b64decode(unquote_plus(raw["Signature"]), validate=False)
    except (UnicodeError, binascii.Error, ValueError):
        raise LoginError("saml_malformed", "query signature is not readable") from None
    for _name, cert in client.metadata.certs(idp_entity_id(idp), "idpsso", "signing"):
        try:
            key = extract_rsa_key_from_x509_cert(pem_format(cert))
        except Exception:  # noqa: S112 - a non-RSA or unreadable certificate simply does not verify
            continue
        if SIGNER_ALGS[sig_alg].verify(signed, signature, key):
            return
    raise LoginError("invalid_signature", "query signature does not verify with the IdP's keys")


def _peek(xml: bytes, idp: IdentityProvider) -> samlp.LogoutRequest | None:
    """The *unverified* request, only to address a failure reply (ID, Issuer): None unless it
    claims to come from this IdP. Never used for identity."""
    try:
        message = samlp.logout_request_from_string(xml)
    except Exception:
        return None
    issuer = (getattr(getattr(message, "issuer", None), "text", None) or "").strip()
    return message if message is not None and message.id and issuer == idp_entity_id(idp) else None


def _check_message(message: Any, idp: IdentityProvider, what: str) -> None:
    """Issuer, Destination and IssueInstant: pysaml2 either skips them or ignores the result."""
    issuer = (message.issuer.text or "").strip() if message.issuer is not None else ""
    if issuer != idp_entity_id(idp):
        raise LoginError("saml_issuer", f"{what} Issuer")
    # Signed front-channel messages must name their Destination (saml-bindings 3.4.5.2, 3.5.5.2).
    if message.destination != slo_url(idp):
        raise LoginError("saml_destination", f"{what} Destination")
    issued = _epoch(message.issue_instant)
    now = time.time()
    if issued > now + idp.clock_skew:
        raise LoginError("token_not_yet_valid", f"{what} IssueInstant is in the future")
    if issued < now - settings.LOGIN_STATE_TTL - idp.clock_skew:
        raise LoginError("token_expired", f"{what} IssueInstant is too old")


def _epoch(stamp: str | None) -> float:
    try:
        return float(calendar.timegm(str_to_time(stamp)))
    except Exception:
        raise LoginError("saml_malformed", f"bad timestamp {str(stamp)[:40]!r}") from None


def _status_codes(message: Any) -> list[str]:
    codes, code = [], getattr(message.status, "status_code", None)
    while code is not None and len(codes) < 4:
        codes.append(code.value or "")
        code = code.status_code
    return codes


def _error_for(exc: Exception) -> LoginError:
    """What pysaml2 (or our crypto backend under it, the ``__cause__``) raised, as our code."""
    cause = exc.__cause__ or exc
    text = f"{exc} {cause}"
    if isinstance(cause, WeakAlgorithm):
        return LoginError("saml_weak_algorithm", str(cause)[:200])
    if isinstance(cause, XmlRefused) or getattr(cause, "code", "") == "xml_doctype":
        return LoginError("saml_doctype")
    if isinstance(cause, Refused):  # signature wrapping, forbidden transforms
        return LoginError("invalid_signature", cause.code)
    if "Required signature missing" in text:
        return LoginError("saml_slo_unsigned")
    if "destined for me" in text:
        return LoginError("saml_destination", "Destination")
    if isinstance(exc, (SigverError, IncorrectlySigned, CertificateError)):
        return LoginError("invalid_signature", type(cause).__name__)
    return LoginError("saml_malformed", f"{type(exc).__name__}: {str(exc)[:200]}")


def _reply(client: Saml2Client, idp: IdentityProvider, message: Any, status: Any, binding_in: str,
           relay_state: str) -> HttpResponse | None:
    """A signed LogoutResponse to ``message`` at the IdP's SLO (Response)Location from metadata."""
    offered = [b for name, b in _BINDINGS.items() if (idp.config.get("slo") or {}).get(name)]
    binding = binding_in if binding_in in offered else next(iter(offered), None)
    if binding is None:
        return None
    post = binding == BINDING_HTTP_POST
    destination = client.response_args(message, [binding])["destination"]
    response = client.create_logout_response(message, bindings=[binding], status=status, sign=post,
                                              sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    info = client.apply_binding(binding, str(response), destination, relay_state, response=True,
                                sign=not post, sigalg=SIG_RSA_SHA256)
    return _http(info, binding)


def _http(info: dict, binding: str) -> HttpResponse:
    if binding == BINDING_HTTP_POST:
        response: HttpResponse = HttpResponse(info["data"], content_type="text/html; charset=utf-8")
    else:
        response = HttpResponseRedirect(dict(info["headers"])["Location"])
    response["Cache-Control"] = "no-store"
    return response
