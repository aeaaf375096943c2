"""The broker as relying party of a real, OpenID Certified provider (npm ``oidc-provider``):
code flow with PKCE S256 over HTTP, both client authentication methods, signing key rotation
at the provider, client secret rotation, back-channel logout sent by the provider itself, and
one login in Chromium."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.sessions.backends.cache import SessionStore
from django.core.management import call_command

from broker.login import SESSION_SUBJECT
from broker.models import AuditEvent, IdentityProvider
from broker.protocols.oidc.logout import BACKCHANNEL_EVENT, end_session_url

from .conftest import (
    ACCOUNT,
    CHROMIUM,
    CHROMIUM_ARGS,
    HTTP_BASE_URL,
    SLUG,
    FirstForm,
    follow_to_callback,
    login_with_test_client,
)


def events(action: str, **filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("id"))


def failures() -> list[tuple[str, str]]:
    """(reason, detail) of every login.failed event: the broker's word on a refused login."""
    return [(e.reason, e.data.get("detail", "")) for e in AuditEvent.objects.filter(action="login.failed")]


def assert_logged_in(response, client) -> dict:
    assert response.status_code == 302, (response.status_code, failures())
    assert response["Location"] == "/sso/me/"
    me = client.get("/sso/me/")
    assert me.status_code == 200, me.content
    return me.json()


def test_provider_requires_pkce(oidc_op):
    """Control: the provider refuses an authorization request without PKCE, so the logins
    below prove the broker sends an S256 challenge and the matching verifier."""
    client = oidc_op.clients["post"]
    response = requests.get(f"{oidc_op.issuer}/auth", allow_redirects=False, timeout=10, params={
        "client_id": client.client_id, "response_type": "code", "scope": "openid", "state": "s",
        "redirect_uri": f"{HTTP_BASE_URL}/sso/{client.slug}/oidc/callback/"})
    assert response.is_redirect
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"] and "PKCE" in query["error_description"][0]


@pytest.mark.parametrize("which", ["post", "basic"])
def test_login_over_http(oidc_op, register_op, admin_mapping, http_broker, client, which):
    idp = register_op(which)
    assert idp.config["discovery"]["issuer"] == oidc_op.issuer
    assert events("idp.jwks_changed", idp=idp.slug, reason="registration")
    calls = {path: oidc_op.requests_to(path) for path in ("/token", "/me", "/jwks")}

    me = assert_logged_in(login_with_test_client(client, idp.slug), client)

    assert me["idp"] == idp.slug
    assert me["subject"] == ACCOUNT
    assert me["email"] == "alice@example.org"
    assert me["roles"] == ["portal_admin"]
    succeeded = events("login.succeeded")
    assert len(succeeded) == 1
    assert (succeeded[0].idp, succeeded[0].subject) == (idp.slug, ACCOUNT)
    assert succeeded[0].data["roles"] == ["portal_admin"]
    assert not events("login.failed")
    # One code exchange (PKCE is required by the provider), one userinfo call, and the JWKS
    # cached at registration is used as is.
    assert {path: oidc_op.requests_to(path) - n for path, n in calls.items()} == {
        "/token": 1, "/me": 1, "/jwks": 0}


def test_callback_is_one_time(oidc_op, register_op, admin_mapping, http_broker, client):
    """Replaying the provider's redirect (same state and code) is refused: state is one-time."""
    idp = register_op()
    start = client.get(f"/sso/{idp.slug}/login/", {"next": "/sso/me/"})
    callback, _ = follow_to_callback(start["Location"], f"{http_broker}/sso/{idp.slug}/oidc/callback/")
    path = callback.removeprefix(http_broker)
    assert client.get(path).status_code == 302
    replay = client.get(path)
    assert replay.status_code == 400
    assert [e.reason for e in events("login.failed")] == ["state_mismatch"]


def test_signing_key_rotation_at_the_provider(oidc_op, register_op, admin_mapping, http_broker, client):
    idp = register_op()
    assert_logged_in(login_with_test_client(client, idp.slug), client)
    jwks_before = oidc_op.requests_to("/jwks")

    old_kid, new_kid = oidc_op.rotate_key()
    client.logout()
    assert_logged_in(login_with_test_client(client, idp.slug), client)

    changed = events("idp.jwks_changed", idp=idp.slug, reason="unknown_kid")
    assert len(changed) == 1
    assert changed[0].data["kids_added"] == [new_kid]
    assert changed[0].data["kids_removed"] == [old_kid]
    assert oidc_op.requests_to("/jwks") == jwks_before + 1  # exactly one refetch
    assert len(events("login.succeeded")) == 2

    # A third login uses the cached new key: no further fetch.
    client.logout()
    assert_logged_in(login_with_test_client(client, idp.slug), client)
    assert oidc_op.requests_to("/jwks") == jwks_before + 1


def test_client_secret_rotation(oidc_op, register_op, admin_mapping, http_broker, client, monkeypatch):
    wrong = "not-the-secret-" + uuid.uuid4().hex
    idp = register_op(secret_env="OIDC_INTEROP_OLD_SECRET", secret=wrong)
    monkeypatch.setenv("OIDC_INTEROP_NEW_SECRET", oidc_op.clients["post"].secret)

    # Only the wrong secret: the provider says invalid_client and the login fails closed.
    response = login_with_test_client(client, idp.slug)
    assert response.status_code == 400
    assert [e.reason for e in events("login.failed")] == ["invalid_client"]

    call_command("idp", "rotate-secret", idp.slug, "--secondary-env", "OIDC_INTEROP_NEW_SECRET")
    assert_logged_in(login_with_test_client(client, idp.slug), client)
    used = events("oidc.secondary_secret_used", idp=idp.slug)
    assert len(used) == 1 and used[0].reason == "invalid_client"

    call_command("idp", "rotate-secret", idp.slug, "--promote")
    idp.refresh_from_db()
    assert idp.config["client_secret_env"] == "OIDC_INTEROP_NEW_SECRET"
    client.logout()
    assert_logged_in(login_with_test_client(client, idp.slug), client)
    assert len(events("oidc.secondary_secret_used", idp=idp.slug)) == 1  # primary works now
    assert [e.reason for e in events("idp.secret_rotated", idp=idp.slug)] == ["secondary_set", "promoted"]

    # Secrets never reach the audit log, only the names of their variables.
    dump = json.dumps([e.data for e in AuditEvent.objects.all()])
    assert wrong not in dump and oidc_op.clients["post"].secret not in dump


def _browser_login(live_broker: str, slug: str) -> requests.Session:
    """Log in through the provider with ``requests`` against the live server."""
    session = requests.Session()
    response = session.get(f"{live_broker}/sso/{slug}/login/", params={"next": "/sso/me/"}, timeout=10)
    assert response.status_code == 200 and response.url == f"{live_broker}/sso/me/", (
        response.status_code, response.url, response.text[:300], failures())
    assert response.json()["subject"] == ACCOUNT
    return session


def test_backchannel_logout_sent_by_the_provider(oidc_op, register_op, admin_mapping, live_broker):
    idp = register_op()
    session = _browser_login(live_broker, idp.slug)
    store = SessionStore(session.cookies["sso_session"])
    assert store[SESSION_SUBJECT] == ACCOUNT
    id_token = store["broker_oidc_id_token"]

    # RP-initiated logout at the provider; confirming it makes the provider POST a logout
    # token to our back-channel endpoint before it redirects the browser back.
    url = end_session_url(idp, id_token, f"{live_broker}/sso/")
    prompt = session.get(url, timeout=10)
    assert prompt.status_code == 200, prompt.text[:500]
    form = FirstForm.parse(prompt.text)
    done = session.post(requests.compat.urljoin(prompt.url, form.action),
                        data={**form.fields, "logout": "yes"}, allow_redirects=False, timeout=10)
    assert done.is_redirect and done.headers["Location"] == f"{live_broker}/sso/", done.text[:300]

    sent = oidc_op.events("backchannel.sent")
    assert sent and sent[-1]["status"] == 200, oidc_op.state()["events"]
    assert sent[-1]["url"] == f"{live_broker}/sso/{idp.slug}/oidc/backchannel-logout/"
    logout = events("oidc.backchannel_logout", idp=idp.slug)
    assert len(logout) == 1 and logout[0].outcome == "success"
    assert logout[0].data["sessions_ended"] == 1 and logout[0].data["sid_given"] is True
    assert session.get(f"{live_broker}/sso/me/", timeout=10).status_code == 401

    # The provider's own logout token, replayed, is refused (one-time jti).
    replay = requests.post(sent[-1]["url"], data={"logout_token": sent[-1]["logout_token"]}, timeout=10)
    assert replay.status_code == 400 and replay.json()["error_description"] == "oidc_claims"


def test_backchannel_logout_by_subject(oidc_op, register_op, admin_mapping, live_broker):
    """A logout token naming only ``sub`` ends all of that subject's sessions. oidc-provider
    always sends a ``sid`` to a client that asks for it, so this token is signed here with the
    provider's own key (the one handed to it in OP_JWKS)."""
    idp = register_op()
    first, second = _browser_login(live_broker, idp.slug), _browser_login(live_broker, idp.slug)
    now = int(time.time())
    token = oidc_op.sign({"iss": oidc_op.issuer, "aud": idp.config["client_id"], "iat": now,
                          "exp": now + 120, "jti": uuid.uuid4().hex, "sub": ACCOUNT,
                          "events": {BACKCHANNEL_EVENT: {}}})
    response = requests.post(f"{live_broker}/sso/{idp.slug}/oidc/backchannel-logout/",
                             data={"logout_token": token}, timeout=10)
    assert response.status_code == 200, response.text
    assert events("oidc.backchannel_logout", idp=idp.slug)[0].data["sessions_ended"] == 2
    for session in (first, second):
        assert session.get(f"{live_broker}/sso/me/", timeout=10).status_code == 401


@pytest.mark.slow
def test_browser_login(oidc_op, register_op, admin_mapping, live_broker):
    from playwright.sync_api import sync_playwright

    idp = register_op()
    assert IdentityProvider.objects.filter(slug=SLUG, enabled=True).exists()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def on_console(message):
                if message.type == "error":
                    errors.append(f"{page.url}: {message.text} @ {message.location}")

            page.on("console", on_console)
            page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
            page.goto(f"{live_broker}/sso/?next=/sso/me/")
            page.get_by_role("link", name=idp.name).click()
            page.wait_for_url(f"{live_broker}/sso/me/", timeout=15000)
            me = json.loads(page.locator("body").inner_text())
        finally:
            browser.close()
    assert me["subject"] == ACCOUNT and me["idp"] == SLUG and me["roles"] == ["portal_admin"]
    ours = [e for e in errors if e.startswith(live_broker)]
    # /sso/me/ is JSON, which cannot declare an icon (base.html does), so Chromium asks for
    # /favicon.ico and logs the broker's 404 as a console error (reported).
    ours = [e for e in ours if not (e.startswith(f"{live_broker}/sso/me/")
                                    and f"'url': '{live_broker}/favicon.ico'" in e)]
    assert ours == []
    assert len(events("login.succeeded", idp=SLUG, subject=ACCOUNT)) == 1
    assert failures() == []
