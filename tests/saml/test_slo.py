"""SAML Single Logout against pysaml2's own IdP (``saml2.server.Server``): SP-initiated and
IdP-initiated, HTTP-Redirect and HTTP-POST, and the refusals. The IdP side parses and
verifies what the broker sends with its own code (stock xmlsec1 backend)."""

from __future__ import annotations

import base64
import html
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2.response import StatusError
from saml2.s_utils import status_message_factory
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.sigver import verify_redirect_signature
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from broker.login import SESSION_INDEX
from broker.models import AuditEvent
from tests.saml.conftest import BASE, SamlSetup, make_setup
from tests.saml.idp import TestIdP

pytestmark = pytest.mark.django_db


# -- the IdP's side ------------------------------------------------------------------------


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def local(location: str) -> str:
    """An absolute broker URL as a test-client path, query string byte for byte."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == BASE, location
    return f"{parts.path}?{parts.query}"


def form_fields(page: bytes) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of pysaml2's auto-submit form (HTTP-POST binding)."""
    text = page.decode()
    action = html.unescape(re.search(r'<form action="([^"]*)"', text).group(1))
    fields = {html.unescape(n): html.unescape(v)
              for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', text)}
    return action, fields


def slo_url(saml: SamlSetup) -> str:
    return f"{BASE}/sso/{saml.slug}/saml/slo/"


def verify_sp_query_signature(saml: SamlSetup, location: str) -> None:
    """What an IdP does with our HTTP-Redirect message: verify its query signature with the
    signing certificates of our SP metadata."""
    server = saml.idp.server
    certs = server.metadata.certs(saml.sp_entity_id, "spsso", "signing")
    assert certs
    assert any(verify_redirect_signature(query(location), server.sec.sec_backend, cert) for _, cert in certs)


def idp_reads_request(saml: SamlSetup, location: str):
    """The IdP parses our HTTP-Redirect LogoutRequest, verifying its query signature."""
    q = query(location)
    return saml.idp.server.parse_logout_request(
        q["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=q["RelayState"], sigalg=q["SigAlg"],
        signature=q["Signature"]), q["RelayState"]


def idp_answers(saml: SamlSetup, logout_request, relay_state: str, *, binding=BINDING_HTTP_REDIRECT,
                status=None, sign: bool = True) -> dict:
    """The IdP's LogoutResponse to our LogoutRequest, as pysaml2 would send it."""
    server = saml.idp.server
    post = binding == BINDING_HTTP_POST
    response = server.create_logout_response(logout_request.message, [binding], status=status,
                                             sign=sign and post, sign_alg=SIG_RSA_SHA256,
                                             digest_alg=DIGEST_SHA256)
    destination = server.response_args(logout_request.message, [binding])["destination"]
    assert destination == slo_url(saml)
    return server.apply_binding(binding, str(response), destination, relay_state, response=True,
                                sign=sign and not post, sigalg=SIG_RSA_SHA256)


def idp_logout_request(saml: SamlSetup, *, binding=BINDING_HTTP_REDIRECT, subject: str = "alice",
                       session_index: str | None = None, sign: bool = True, relay_state: str = "idp-rs",
                       destination: str | None = None, tamper=None, issuer: str | None = None) -> dict:
    """An IdP-initiated LogoutRequest from the TestIdP (signed unless ``sign=False``)."""
    server = saml.idp.server
    post = binding == BINDING_HTTP_POST
    if issuer:
        server.config.entityid = issuer
    _id, request = server.create_logout_request(
        destination or slo_url(saml), saml.sp_entity_id,
        name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=subject),
        session_indexes=[session_index] if session_index else None,
        sign=sign and post, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
    )
    if issuer:
        server.config.entityid = saml.idp.entity_id
    xml = str(request)
    if tamper:
        xml = tamper(xml)
    return server.apply_binding(binding, xml, destination or slo_url(saml), relay_state,
                                sign=sign and not post, sigalg=SIG_RSA_SHA256)


def send(client: Client, info: dict):
    """Deliver a pysaml2 binding result (redirect or auto-POST form) to the broker."""
    if info["method"] == "GET":
        return client.get(local(dict(info["headers"])["Location"]))
    action, fields = form_fields(info["data"].encode())
    return client.post(urlsplit(action).path, fields)


def idp_reads_reply(saml: SamlSetup, response, *, expect_success: bool = True):
    """The IdP parses (and verifies) our LogoutResponse; returns the samlp.LogoutResponse."""
    server = saml.idp.server
    if response.status_code == 302:
        location = response["Location"]
        assert location.startswith(f"{saml.idp.entity_id}/slo/"), location
        verify_sp_query_signature(saml, location)
        encoded, binding = query(location)["SAMLResponse"], BINDING_HTTP_REDIRECT
    else:
        assert response.status_code == 200, response.content[:500]
        action, fields = form_fields(response.content)
        assert action.startswith(f"{saml.idp.entity_id}/slo/")
        encoded, binding = fields["SAMLResponse"], BINDING_HTTP_POST
        assert b"Signature" in base64.b64decode(encoded)
    if expect_success:
        parsed = server.parse_logout_request_response(encoded, binding)
        assert parsed.response.issuer.text == saml.sp_entity_id
        return parsed.response
    with pytest.raises(StatusError):
        server.parse_logout_request_response(encoded, binding)
    xml = server.unravel(encoded, binding, "logout_response")
    return samlp.logout_response_from_string(xml)


def log_out(saml: SamlSetup, next_url: str | None = "/bye/"):
    """POST /sso/logout/; returns our LogoutRequest as the IdP parsed it, and the RelayState."""
    response = saml.client.post("/sso/logout/", {"next": next_url} if next_url else {})
    assert response.status_code == 302, response.content[:500]
    return idp_reads_request(saml, response["Location"])


def login(saml: SamlSetup, client: Client | None = None, subject: str = "alice") -> str:
    """Log ``client`` in at the IdP; returns the SessionIndex of that login."""
    setup = SamlSetup(idp=saml.idp, slug=saml.slug, client=client or saml.client)
    response = setup.login(subject=subject)
    assert response.status_code == 302, response.content[:500]
    return setup.client.session[SESSION_INDEX]


def logged_in(client: Client) -> bool:
    status = client.get("/sso/me/").status_code
    assert status in (200, 401)
    return status == 200


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


@pytest.fixture
def post_only_slo(monkeypatch):
    """IdPs registered while active publish their SLO endpoint with the HTTP-POST binding only."""
    original = TestIdP.metadata_xml

    def metadata_xml(self) -> bytes:
        xml = original(self).decode()
        pattern = r'(<[^>]*SingleLogoutService[^>]*Binding=")[^"]*(")'
        return re.sub(pattern, rf"\g<1>{BINDING_HTTP_POST}\2", xml).encode()

    monkeypatch.setattr(TestIdP, "metadata_xml", metadata_xml)


# -- SP-initiated --------------------------------------------------------------------------


def test_sp_initiated_logout_over_redirect(saml):
    session_index = login(saml)
    response = saml.client.post("/sso/logout/", {"next": "/bye/"})
    assert not logged_in(saml.client), "the local session ends before the IdP is asked"
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{saml.idp.entity_id}/slo/redirect?")
    verify_sp_query_signature(saml, location)
    request, relay_state = idp_reads_request(saml, location)
    message = request.message
    assert (message.name_id.text, message.name_id.format) == ("alice", NAMEID_FORMAT_PERSISTENT)
    assert [si.text for si in message.session_index] == [session_index]
    assert message.issuer.text == saml.sp_entity_id
    assert message.destination == f"{saml.idp.entity_id}/slo/redirect"
    assert [e.subject for e in events("logout")] == ["alice"]

    back = send(saml.client, idp_answers(saml, request, relay_state))
    assert back.status_code == 302 and back["Location"] == "/bye/"
    assert [(e.idp, e.outcome) for e in events("saml.slo_completed")] == [("corp", "success")]
    assert not events("saml.slo_failed")
    # The answer is one-time: a replay finds no pending logout.
    replay = send(saml.client, idp_answers(saml, request, relay_state))
    assert replay.status_code == 400
    assert events("saml.slo_failed")[-1].reason == "state_mismatch"


def test_sp_initiated_logout_over_post(tmp_path, sp_keys, post_only_slo):
    saml = make_setup(tmp_path, slug="postidp")
    login(saml)
    response = saml.client.post("/sso/logout/", {"next": "/bye/"})
    assert not logged_in(saml.client)
    assert response.status_code == 200 and b"document.forms[0].submit()" in response.content
    action, fields = form_fields(response.content)
    assert action == f"{saml.idp.entity_id}/slo/redirect"  # the URL; its binding is now POST
    # want_authn_requests_signed: the IdP insists on (and verifies) the XML signature.
    request = saml.idp.server.parse_logout_request(fields["SAMLRequest"], BINDING_HTTP_POST)
    assert request.message.signature is not None and request.message.name_id.text == "alice"

    back = send(saml.client, idp_answers(saml, request, fields["RelayState"], binding=BINDING_HTTP_POST))
    assert back.status_code == 302 and back["Location"] == "/bye/"
    assert len(events("saml.slo_completed")) == 1


def test_unsigned_post_logout_response_is_refused_but_user_stays_logged_out(tmp_path, sp_keys, post_only_slo):
    saml = make_setup(tmp_path, slug="postidp")
    login(saml)
    _action, fields = form_fields(saml.client.post("/sso/logout/", {"next": "/bye/"}).content)
    request = saml.idp.server.parse_logout_request(fields["SAMLRequest"], BINDING_HTTP_POST)
    unsigned = idp_answers(saml, request, fields["RelayState"], binding=BINDING_HTTP_POST, sign=False)
    back = send(saml.client, unsigned)
    assert back.status_code == 302 and back["Location"] == "/bye/"
    assert events("saml.slo_failed")[-1].reason == "saml_slo_unsigned"
    assert not events("saml.slo_completed") and not logged_in(saml.client)


def test_idp_reports_partial_logout(saml):
    login(saml)
    request, relay_state = log_out(saml)
    status = status_message_factory("could not reach the other SPs", samlp.STATUS_PARTIAL_LOGOUT)
    back = send(saml.client, idp_answers(saml, request, relay_state, status=status))
    assert back.status_code == 302 and back["Location"] == "/bye/"
    [event] = events("saml.slo_partial")
    assert samlp.STATUS_PARTIAL_LOGOUT in event.data["status"]
    assert not logged_in(saml.client)


def test_redirect_logout_response_with_bad_signature_lands_on_next(saml):
    login(saml)
    request, relay_state = log_out(saml)
    # Another (validly encoded) response under the first one's signature.
    forged = swap(location(idp_answers(saml, request, relay_state)),
                  location(idp_answers(saml, request, relay_state)), "SAMLResponse")
    back = saml.client.get(local(forged))
    assert back.status_code == 302 and back["Location"] == "/bye/"
    assert events("saml.slo_failed")[-1].reason == "invalid_signature"
    assert not events("saml.slo_completed")


def test_idp_down_or_unknown_response_leaves_user_logged_out(saml):
    login(saml)
    response = saml.client.post("/sso/logout/", {"next": "/bye/"})
    assert response.status_code == 302  # the browser never comes back: the IdP is down
    assert not logged_in(saml.client)
    # Something that is no answer to anything we sent.
    garbage = saml.client.get(f"/sso/{saml.slug}/saml/slo/", {"SAMLResponse": "bm90IHNhbWw=",
                                                               "RelayState": "x" * 43})
    assert garbage.status_code == 400 and b"state_mismatch" in garbage.content
    nothing = saml.client.get(f"/sso/{saml.slug}/saml/slo/")
    assert nothing.status_code == 400
    assert [e.reason for e in events("saml.slo_failed")] == ["state_mismatch", "saml_malformed"]
    assert not logged_in(saml.client)


def test_failure_to_build_the_request_still_logs_out(saml, monkeypatch):
    from saml2.client import Saml2Client

    login(saml)

    def broken(*args, **kwargs):
        raise RuntimeError("fault injected: signing key unreadable")

    monkeypatch.setattr(Saml2Client, "create_logout_request", broken)
    response = saml.client.post("/sso/logout/", {"next": "/bye/"})
    assert response.status_code == 302 and response["Location"] == "/bye/"
    assert not logged_in(saml.client)
    [event] = events("saml.slo_failed")
    assert (event.idp, event.subject, event.reason) == ("corp", "alice", "saml_slo_request_failed")
    assert len(events("logout")) == 1


def test_idp_without_slo_endpoint_means_local_logout_only(saml):
    login(saml)
    idp = saml_idp(saml)
    idp.config = {**idp.config, "slo": {}}
    idp.save()
    response = saml.client.post("/sso/logout/", {"next": "/bye/"})
    assert response.status_code == 302 and response["Location"] == "/bye/"
    assert not logged_in(saml.client) and not events("saml.slo_failed")


def saml_idp(saml: SamlSetup):
    from broker.models import IdentityProvider

    return IdentityProvider.objects.get(slug=saml.slug)


# -- IdP-initiated -------------------------------------------------------------------------


@pytest.mark.parametrize("binding", [BINDING_HTTP_REDIRECT, BINDING_HTTP_POST])
def test_idp_initiated_logout_ends_the_session_with_that_session_index(saml, binding):
    first, second = saml.client, Client()
    first_index = login(saml, first)
    second_index = login(saml, second)
    assert first_index != second_index
    # Redirect: the user's own browser; POST: cross-site, the Lax session cookie is not sent.
    browser = first if binding == BINDING_HTTP_REDIRECT else Client()
    response = send(browser, idp_logout_request(saml, binding=binding, session_index=first_index))
    reply = idp_reads_reply(saml, response)
    assert reply.status.status_code.value == samlp.STATUS_SUCCESS
    assert reply.destination == f"{saml.idp.entity_id}/slo/redirect"
    assert query(response["Location"])["RelayState"] == "idp-rs"
    assert not logged_in(first)
    assert logged_in(second)
    [event] = events("saml.slo")
    assert (event.idp, event.subject, event.data["count"]) == ("corp", "alice", 1)


def test_idp_initiated_logout_without_session_index_ends_all_of_the_subjects_sessions(saml):
    alice_1, alice_2, bob = saml.client, Client(), Client()
    login(saml, alice_1)
    login(saml, alice_2)
    login(saml, bob, subject="bob")
    response = send(Client(), idp_logout_request(saml, binding=BINDING_HTTP_POST))
    idp_reads_reply(saml, response)
    assert not logged_in(alice_1) and not logged_in(alice_2)
    assert logged_in(bob)
    assert events("saml.slo")[0].data["count"] == 2


def test_idp_initiated_post_is_answered_over_post_when_the_idp_offers_it(tmp_path, sp_keys, post_only_slo):
    saml = make_setup(tmp_path, slug="postidp")
    session_index = login(saml)
    response = send(saml.client, idp_logout_request(saml, binding=BINDING_HTTP_POST,
                                                    session_index=session_index))
    reply = idp_reads_reply(saml, response)  # an XML-signed LogoutResponse the IdP verifies
    assert reply.signature is not None
    assert not logged_in(saml.client)


def _refused(saml, browser, response, reason: str, *, earlier: int = 0) -> None:
    assert logged_in(browser), "a refused LogoutRequest ends no session"
    assert len(events("saml.slo")) == earlier
    assert events("saml.slo_failed")[-1].reason == reason
    if response.status_code in (200, 302):  # answered with a failure status, signed
        reply = idp_reads_reply(saml, response, expect_success=False)
        assert reply.status.status_code.value == samlp.STATUS_REQUESTER
    else:
        assert response.status_code == 400


def location(info: dict) -> str:
    return dict(info["headers"])["Location"]


def swap(url: str, other: str, param: str) -> str:
    """``url`` carrying ``other``'s message under ``url``'s own signature."""
    def value(u: str) -> str:
        return u.split(f"{param}=")[1].split("&")[0]
    return url.replace(value(url), value(other))


def _tampered_redirect(saml, si):
    return saml.client.get(local(swap(location(idp_logout_request(saml, session_index="someone-else")),
                                      location(idp_logout_request(saml, session_index=si)), "SAMLRequest")))


def _smuggled(saml, si):
    # "SAML%52equest" is a second SAMLRequest to Django's QueryDict, which keeps the last one.
    unsigned = location(idp_logout_request(saml, session_index=si, sign=False))
    signed = location(idp_logout_request(saml, session_index="someone-else"))
    return saml.client.get(local(f"{signed}&SAML%52equest={unsigned.split('SAMLRequest=')[1]}"))


def _stale(xml: str) -> str:
    return re.sub(r'IssueInstant="[^"]+"', 'IssueInstant="2001-01-01T00:00:00Z"', xml)


REFUSED = {
    "unsigned-redirect": ("saml_slo_unsigned", lambda saml, si: send(
        saml.client, idp_logout_request(saml, session_index=si, sign=False))),
    "unsigned-post": ("saml_slo_unsigned", lambda saml, si: send(
        saml.client, idp_logout_request(saml, binding=BINDING_HTTP_POST, session_index=si, sign=False))),
    "tampered-redirect": ("invalid_signature", _tampered_redirect),
    "tampered-post": ("invalid_signature", lambda saml, si: send(saml.client, idp_logout_request(
        saml, binding=BINDING_HTTP_POST, session_index=si, tamper=lambda x: x.replace(">alice<", ">bob<")))),
    # Signed with corp's key but naming another issuer.
    "other-issuer": ("saml_issuer", lambda saml, si: send(saml.client, idp_logout_request(
        saml, session_index=si, issuer="https://evil.idp.example/idp"))),
    "other-destination": ("saml_destination", lambda saml, si: send(saml.client, idp_logout_request(
        saml, session_index=si, tamper=lambda x: x.replace(slo_url(saml), f"{BASE}/sso/x/saml/slo/")))),
    "stale": ("token_expired", lambda saml, si: send(
        saml.client, idp_logout_request(saml, session_index=si, tamper=_stale))),
    "smuggled": ("saml_malformed", _smuggled),
}


@pytest.mark.parametrize("case", REFUSED)
def test_forged_logout_request_is_refused(saml, case):
    reason, attack = REFUSED[case]
    response = attack(saml, login(saml))
    # A failure LogoutResponse to corp's endpoint, unless the message does not claim to be corp's.
    assert response.status_code == (400 if case == "other-issuer" else 302)
    _refused(saml, saml.client, response, reason)


def test_logout_request_from_another_idp_is_refused(saml, tmp_path):
    session_index = login(saml)
    other = make_setup(tmp_path, slug="other")
    # Signed by the other IdP, sent to corp's endpoint: corp's keys do not verify it, and no
    # answer goes anywhere (the message does not even claim to come from corp).
    response = send(saml.client, idp_logout_request(other, destination=slo_url(saml),
                                                    session_index=session_index))
    assert response.status_code == 400
    _refused(saml, saml.client, response, "invalid_signature")


def test_replayed_logout_request_is_refused(saml):
    first_index = login(saml)
    info = idp_logout_request(saml, session_index=first_index)
    assert send(Client(), info).status_code == 302
    assert not logged_in(saml.client)
    again = login(saml)
    assert again != first_index
    response = send(saml.client, info)
    _refused(saml, saml.client, response, "saml_replay", earlier=1)


def test_logout_response_to_another_request_is_refused(saml):
    login(saml)
    old_request, _old_relay = log_out(saml, None)
    login(saml)
    _request, relay_state = log_out(saml)
    back = send(saml.client, idp_answers(saml, old_request, relay_state))  # answers the first logout
    assert back.status_code == 302 and back["Location"] == "/bye/"
    assert events("saml.slo_failed")[-1].reason == "saml_in_response_to"
    assert not events("saml.slo_completed")


def test_logout_response_in_another_browser_is_refused(saml):
    login(saml)
    request, relay_state = log_out(saml, None)
    back = send(Client(), idp_answers(saml, request, relay_state))
    assert back.status_code == 400 and b"state_mismatch" in back.content
    assert events("saml.slo_failed")[-1].reason == "state_mismatch"


def test_idp_logout_is_not_undone_by_the_session_refresh(saml):
    """The middleware writes "last seen" into the session of this very request; the ended
    session must not be saved back at the end of the response."""
    session_index = login(saml)
    session = saml.client.session
    session["broker_seen_at"] = int(time.time()) - 120
    session.save()
    response = send(saml.client, idp_logout_request(saml, session_index=session_index))
    idp_reads_reply(saml, response)
    assert not logged_in(saml.client)


def test_attribute_subject_without_session_index_is_a_partial_logout(tmp_path, sp_keys):
    saml = make_setup(tmp_path, slug="attrs", subject_source="email")
    other_browser = Client()
    login(saml)
    login(saml, other_browser)
    assert saml.client.get("/sso/me/").json()["subject"] == "alice@corp.example"
    # The NameID (alice) is not the registry's subject: only this browser's session can be
    # matched (through the NameID stored in it), and the IdP hears that.
    response = send(saml.client, idp_logout_request(saml))
    reply = idp_reads_reply(saml, response, expect_success=False)
    assert reply.status.status_code.value == samlp.STATUS_RESPONDER
    assert not logged_in(saml.client) and logged_in(other_browser)
    [event] = events("saml.slo_failed")
    assert (event.reason, event.data["count"]) == ("saml_slo_unmapped", 1)


def test_failure_to_build_the_reply_still_ends_the_session(saml, monkeypatch):
    from saml2.client import Saml2Client

    session_index = login(saml)

    def broken(*args, **kwargs):
        raise RuntimeError("fault injected: signing failed")

    monkeypatch.setattr(Saml2Client, "create_logout_response", broken)
    response = send(saml.client, idp_logout_request(saml, session_index=session_index))
    assert response.status_code == 302 and response["Location"] == "/sso/"
    assert not logged_in(saml.client)
    assert events("saml.slo")[0].data["count"] == 1
    assert events("saml.slo_failed")[-1].reason == "saml_slo_reply_failed"
