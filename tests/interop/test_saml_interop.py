"""The broker's SAML SP against samlify, an independent SAML IdP from the npm registry.

The IdP (tests/interop/saml_idp.js) verifies our RSA-SHA256-signed HTTP-Redirect
AuthnRequest against our SP metadata and answers with an auto-submitting form that POSTs
a signed Response to our ACS. Logins run over real HTTP against pytest-django's live server,
once with plain HTTP requests and once in headless Chromium.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from lxml import etree

from broker.models import AuditEvent, FederatedIdentity
from broker.services import roles as role_service
from tests.interop.conftest import CHROMIUM, CHROMIUM_ARGS, AutoPostForm, SamlifyIdP

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


@pytest.fixture
def admin_mapping(transactional_db):
    role_service.add_role("portal_admin", actor="test")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="test")


def failures() -> list[tuple[str, str]]:
    """The reasons the broker gave for refused logins (what to look at when a test fails)."""
    return [(e.reason, e.data.get("detail", "")) for e in AuditEvent.objects.filter(action="login.failed")]


def signatures(response_xml: bytes) -> dict[str, tuple[str, str] | None]:
    """Where the Response carries XML signatures, with their (SignatureMethod, DigestMethod)."""
    root = etree.fromstring(response_xml)
    assert root.tag == f"{{{SAMLP}}}Response"
    found: dict[str, tuple[str, str] | None] = {}
    for name, element in (("response", root), ("assertion", root.find(f"{{{SAML}}}Assertion"))):
        signature = element.find(f"{{{DS}}}Signature")
        found[name] = None if signature is None else (
            signature.find(f".//{{{DS}}}SignatureMethod").get("Algorithm"),
            signature.find(f".//{{{DS}}}DigestMethod").get("Algorithm"),
        )
    return found


def start_login(idp: SamlifyIdP, session: requests.Session) -> str:
    """GET our login URL; returns the IdP redirect URL (HTTP-Redirect AuthnRequest)."""
    start = session.get(idp.login_url, params={"next": "/sso/me/"}, allow_redirects=False, timeout=10)
    assert start.status_code == 302, start.text[:1000]
    location = start.headers["Location"]
    assert location.startswith(f"{idp.url}/sso?"), location
    return location


def http_login(idp: SamlifyIdP, session: requests.Session) -> tuple[requests.Response, bytes]:
    """One login without a browser: our redirect, the IdP's auto-post form, our ACS."""
    location = start_login(idp, session)
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["SigAlg"] == RSA_SHA256 and query["Signature"] and query["RelayState"]
    page = session.get(location, allow_redirects=False, timeout=10)
    assert page.status_code == 200, f"{page.status_code} {page.text[:500]}\n{idp.log()}"
    form = AutoPostForm.parse(page.text)
    assert (form.action, form.method) == (idp.acs_url, "post")
    assert set(form.fields) == {"SAMLResponse", "RelayState"}
    assert form.fields["RelayState"] == query["RelayState"]
    acs = session.post(form.action, data=form.fields, allow_redirects=False, timeout=10)
    return acs, base64.b64decode(form.fields["SAMLResponse"])


@pytest.mark.parametrize(
    ("sign", "expected"),
    [
        ("assertion", {"response": None, "assertion": (RSA_SHA256, SHA256)}),
        ("both", {"response": (RSA_SHA256, SHA256), "assertion": (RSA_SHA256, SHA256)}),
        ("response", {"response": (RSA_SHA256, SHA256), "assertion": None}),
    ],
    ids=["assertion-signed-in-unsigned-response", "both-signed", "response-signed"],
)
def test_login_through_samlify(samlify_idp, admin_mapping, sign, expected):
    idp = samlify_idp(sign)
    session = requests.Session()
    acs, response_xml = http_login(idp, session)
    assert signatures(response_xml) == expected

    assert acs.status_code == 302, f"{acs.status_code} refused: {failures()}\n{acs.text[:500]}"
    assert acs.headers["Location"] == "/sso/me/"
    me = session.get(f"{idp.broker_url}/sso/me/", timeout=10)
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["idp"], body["subject"], body["roles"]) == ("samlify", "interop-user", ["portal_admin"])
    assert body["email"] == "interop-user@idp.example"

    link = FederatedIdentity.objects.get(idp__slug="samlify", subject="interop-user")
    assert link.last_attributes["email"] == ["interop-user@idp.example"]
    assert link.last_attributes["given_name"] == ["Interop"]
    assert sorted(link.last_attributes["groups"]) == ["api_admins", "interop-testers"]
    succeeded = list(AuditEvent.objects.filter(action="login.succeeded"))
    assert len(succeeded) == 1
    assert (succeeded[0].idp, succeeded[0].subject, succeeded[0].data["protocol"]) == (
        "samlify", "interop-user", "saml")
    assert succeeded[0].data["authn_context"] == (
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport")
    assert failures() == []


def test_replayed_response_is_refused(samlify_idp, admin_mapping):
    idp = samlify_idp("assertion")
    session = requests.Session()
    location = start_login(idp, session)
    form = AutoPostForm.parse(session.get(location, timeout=10).text)
    first = session.post(form.action, data=form.fields, allow_redirects=False, timeout=10)
    assert first.status_code == 302, failures()
    again = session.post(form.action, data=form.fields, allow_redirects=False, timeout=10)
    assert again.status_code >= 400
    assert AuditEvent.objects.filter(action="login.succeeded").count() == 1
    assert [reason for reason, _detail in failures()] == ["state_mismatch"]


def test_samlify_checks_our_authn_request_signature(samlify_idp):
    """The peer really verifies our signature against our metadata (else the test above
    would prove nothing about our AuthnRequest signing)."""
    idp = samlify_idp("assertion")
    location = start_login(idp, requests.Session())
    query = dict(parse_qsl(urlsplit(location).query))
    signature = bytearray(base64.b64decode(query["Signature"]))
    signature[10] ^= 0x01
    query["Signature"] = base64.b64encode(bytes(signature)).decode()
    refused = requests.get(f"{idp.url}/sso?{urlencode(query)}", timeout=10)
    assert refused.status_code == 400
    assert "ERR_FAILED_MESSAGE_SIGNATURE_VERIFICATION" in refused.text


@pytest.mark.slow
def test_browser_login_through_samlify(samlify_idp, admin_mapping):
    """Headless Chromium: picker -> IdP link -> samlify auto-posts back -> /sso/me/."""
    from playwright.sync_api import sync_playwright

    idp = samlify_idp("both")
    console_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()

            def on_console(message):
                if message.type == "error":
                    console_errors.append(f"{page.url}: {message.text} @ {message.location}")

            page.on("console", on_console)
            page.on("pageerror", lambda error: console_errors.append(f"{page.url}: {error}"))
            page.goto(f"{idp.broker_url}/sso/")
            with page.expect_navigation(url=f"{idp.broker_url}/sso/me/", timeout=15_000):
                page.get_by_role("link", name="samlify (both)").click()
            body = page.locator("body").inner_text()
        finally:
            browser.close()
    assert '"subject": "interop-user"' in body, f"{body[:500]}\nrefused: {failures()}\n{idp.log()}"
    assert '"roles": ["portal_admin"]' in body
    ours = [e for e in console_errors if e.startswith(idp.broker_url)]
    # The broker's pages name no icon, so Chromium asks for /favicon.ico and logs the 404
    # as a console error (reported; templates/base.html could declare one or none).
    ours = [e for e in ours if f"'url': '{idp.broker_url}/favicon.ico'" not in e]
    assert ours == []
    assert AuditEvent.objects.filter(action="login.succeeded").count() == 1
    assert failures() == []
