"""Security keys: registration on the one-time enrolment page and assertion at login,
verified by py_webauthn against a software authenticator (real WebAuthn bytes)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from broker.models import AuditEvent, BreakGlassSecurityKey
from tests.breakglass.authenticator import SoftAuthenticator
from tests.breakglass.conftest import LOGIN, VERIFY, login

pytestmark = pytest.mark.django_db
ORIGIN = settings.BREAKGLASS_WEBAUTHN_ORIGIN


def enroll(client: Client, url: str, authenticator: SoftAuthenticator, origin: str = ORIGIN):
    path = urlsplit(url).path
    page = client.get(path)
    assert page.status_code == 200
    options = page.context["webauthn_options"]
    assert options["rp"]["id"] == settings.BREAKGLASS_WEBAUTHN_RP_ID
    credential = authenticator.create(options, origin)
    return client.post(path, {"credential": json.dumps(credential)})


@pytest.fixture
def enrolled(make_account):
    bg = make_account("bg-one")
    key = SoftAuthenticator()
    response = enroll(Client(), bg.enroll_url, key)
    assert response.status_code == 200 and "is registered" in response.content.decode()
    return bg, key


def test_registration_stores_the_key_and_burns_the_link(enrolled):
    bg, key = enrolled
    stored = BreakGlassSecurityKey.objects.get(account=bg.account)
    assert bytes(stored.credential_id) == key.credential_id
    assert stored.transports == ["usb"]
    event = AuditEvent.objects.get(action="breakglass.webauthn_enrolled")
    assert event.data["security_keys"] == 1
    # One-time: the link is gone.
    again = Client().get(urlsplit(bg.enroll_url).path)
    assert again.status_code == 404
    assert AuditEvent.objects.filter(action="breakglass.enrollment_failed", reason="link_invalid").exists()


def test_registration_from_a_foreign_origin_fails(make_account):
    bg = make_account("bg-one")
    response = enroll(Client(), bg.enroll_url, SoftAuthenticator(), origin="https://evil.example")
    assert response.status_code == 400
    assert not BreakGlassSecurityKey.objects.exists()
    assert AuditEvent.objects.filter(action="breakglass.enrollment_failed", reason="bad_credential").exists()


def test_expired_link_is_refused(make_account, settings):
    settings.BREAKGLASS_ENROLL_TTL = 0
    bg = make_account("bg-one")
    assert Client().get(urlsplit(bg.enroll_url).path).status_code == 404


def test_login_with_password_and_security_key(enrolled):
    bg, key = enrolled
    client = Client()
    response = login(client, bg, authenticator=key)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    used = AuditEvent.objects.get(action="breakglass.used")
    assert used.data["factor"] == "webauthn"
    stored = BreakGlassSecurityKey.objects.get(account=bg.account)
    assert stored.sign_count == 1 and stored.last_used_at is not None


def test_security_key_is_offered_first_with_totp_as_fallback(enrolled):
    bg, _key = enrolled
    client = Client()
    client.post(LOGIN, {"username": bg.name, "password": bg.password})
    page = client.get(VERIFY)
    body = page.content.decode()
    assert body.index("Use security key") < body.index("Authenticator code")
    options = page.context["webauthn_options"]
    assert [c["id"] for c in options["allowCredentials"]] == [
        BreakGlassSecurityKey.objects.get().credential_id_b64]
    # The TOTP fallback still works for an account with a key.
    assert client.post(VERIFY, {"otp": bg.code()}).status_code == 302


def test_forged_or_replayed_assertions_fail(enrolled):
    bg, key = enrolled
    # A different private key claiming the registered credential ID.
    forger = SoftAuthenticator()
    forger.credential_id = key.credential_id
    forger.rp_id = key.rp_id
    response = login(Client(), bg, authenticator=forger)
    assert response.status_code == 403
    assert AuditEvent.objects.filter(action="breakglass.failed").last().reason == "bad_security_key"
    # Replay: an assertion for one challenge is refused for the next.
    client = Client()
    client.post(LOGIN, {"username": bg.name, "password": bg.password})
    first = client.get(VERIFY).context["webauthn_options"]
    old = key.get(first, ORIGIN)
    client.post(VERIFY, {"otp": "000000"})  # a failed attempt issues a new challenge
    assert client.post(VERIFY, {"assertion": json.dumps(old)}).status_code == 403
    assert client.get("/admin/").status_code == 302


def test_assertion_for_another_rp_fails(enrolled):
    bg, key = enrolled
    client = Client()
    client.post(LOGIN, {"username": bg.name, "password": bg.password})
    options = client.get(VERIFY).context["webauthn_options"]
    assertion = key.get(options, ORIGIN, rp_id="evil.example")
    assert client.post(VERIFY, {"assertion": json.dumps(assertion)}).status_code == 403
