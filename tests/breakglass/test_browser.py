"""The break-glass pages in a real browser: Chromium (Playwright) with a CDP virtual
authenticator registers a security key on the enrolment page and signs in with it, through
the page's own JavaScript. No console errors; screenshots of the pages."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

from tests.breakglass.conftest import parse_secrets

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not shutil.which("chromium"),
                       reason="Debian's chromium is not installed"),
]


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(f"{msg.text} @ {msg.location.get('url')}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
            "hasUserVerification": False, "automaticPresenceSimulation": True,
        }})
        try:
            yield page, errors, cdp, added["authenticatorId"], missing
        finally:
            browser.close()


@pytest.fixture
def served_account(live_server, settings):
    """Created before Playwright starts (its event loop forbids Django's sync DB calls)."""
    base = live_server.url.replace("127.0.0.1", "localhost")  # a secure context over http
    settings.BREAKGLASS_WEBAUTHN_RP_ID = "localhost"
    settings.BREAKGLASS_WEBAUTHN_ORIGIN = base
    out = io.StringIO()
    call_command("breakglass", "create", "bg-browser", stdout=out)
    from broker.models import IdentityProvider

    IdentityProvider.objects.create(slug="legacy-adfs", name="Legacy ADFS", protocol="saml",
                                    legacy_crypto=True)
    return base, parse_secrets(out.getvalue())


def test_enrol_and_sign_in_with_a_security_key(served_account, browser_page, tmp_path):
    base, found = served_account
    page, errors, cdp, authenticator, missing = browser_page

    page.goto(base + urlsplit(found["enroll_url"]).path)
    page.screenshot(path=str(tmp_path / "enroll.png"))
    page.click("#webauthn-button")
    page.wait_for_selector("text=is registered")
    assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1

    page.goto(base + "/breakglass/")
    page.screenshot(path=str(tmp_path / "login.png"))
    page.fill("#id_username", "bg-browser")
    page.fill("#id_password", found["password"])
    page.click("button[type=submit]")
    page.wait_for_url("**/breakglass/verify/")
    assert page.is_visible("text=Authenticator code")  # the TOTP fallback is offered too
    page.screenshot(path=str(tmp_path / "verify.png"))
    page.click("#webauthn-button")
    page.wait_for_url("**/admin/")
    assert page.is_visible("#breakglass-banner")
    page.screenshot(path=str(tmp_path / "admin.png"))
    # The IdP list, with its status columns and warnings.
    page.goto(base + "/admin/broker/identityprovider/")
    assert page.is_visible("text=legacy crypto")
    page.screenshot(path=str(tmp_path / "idp_list.png"), full_page=True)
    # Browsers ask for /favicon.ico on their own; the broker serves none (not a page error).
    assert [u for u in missing if not u.endswith("/favicon.ico")] == []
    assert [e for e in errors if not e.endswith("/favicon.ico")] == []
    for name in ("enroll", "login", "verify", "admin", "idp_list"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
