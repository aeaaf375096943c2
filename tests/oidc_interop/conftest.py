"""OIDC interop fixtures: a real OpenID Provider (the npm package ``oidc-provider``, OpenID
Certified; tests/oidc_interop/op.js) as a child process, registered in the broker the way
``idp add-oidc`` does it.

The provider's signing key is generated here and handed to it (OP_JWKS), so a test can also
sign a token with the provider's own key when the real provider cannot produce the fault.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.protocols.oidc.discovery import register
from broker.services import roles as role_service
from tests.servers import terminate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OP_SCRIPT = HERE / "op.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

HTTP_BASE_URL = "https://sso.test"  # the Django test client's site: the OP only redirects to it
SLUG = "oidc-op"  # client_secret_post
BASIC_SLUG = "oidc-op-basic"  # client_secret_basic
SECRET_ENV = "OIDC_INTEROP_CLIENT_SECRET"
SCOPES = "openid profile email groups"
ACCOUNT = "alice"


def new_signing_jwk() -> dict:
    """A private RSA-2048 JWK (RS256) with a fresh kid."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)  # PyJWT says ["sign"]; the provider also verifies with it (id_token_hint)
    return {**jwk, "kid": f"k-{secrets.token_hex(6)}", "use": "sig", "alg": "RS256"}


def _ensure_node_modules() -> None:
    if (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm (Node 20+) is required: it installs oidc-provider into tests/oidc_interop")
    subprocess.run([npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"], cwd=REPO,
                   check=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Client:
    slug: str
    client_id: str
    secret: str
    auth_method: str


class OpenIDProvider:
    """The oidc-provider process: start, reconfigure (keys, redirect URIs), inspect, stop."""

    def __init__(self, log_path: Path) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node (20+) is required for the OIDC interop tests")
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(24)
        self.jwk = new_signing_jwk()
        self.clients = {
            "post": Client(SLUG, "api_management_portal_01", secrets.token_urlsafe(32), "client_secret_post"),
            "basic": Client(BASIC_SLUG, "api_management_portal_02", secrets.token_urlsafe(32),
                            "client_secret_basic"),
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = {
            **os.environ,
            "OP_CLIENT_ID": self.clients["post"].client_id,
            "OP_CLIENT_SECRET": self.clients["post"].secret,
            "OP_BASIC_CLIENT_ID": self.clients["basic"].client_id,
            "OP_BASIC_CLIENT_SECRET": self.clients["basic"].secret,
            "OP_ADMIN_TOKEN": self.admin_token,
            "OP_JWKS": json.dumps({"keys": [self.jwk]}),
            **self.rp_settings(HTTP_BASE_URL, as_env=True),
        }
        self.proc = subprocess.Popen([node, str(OP_SCRIPT), "--port", str(self.port)], cwd=HERE, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_for_discovery(timeout=20)

    def _wait_for_discovery(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited ({self.proc.returncode}): {self.log()}")
            try:
                response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                if response.status_code == 200 and response.json().get("issuer") == self.issuer:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"oidc-provider did not serve discovery within {timeout}s: {self.log()}")

    # --- the relying party's URLs at the provider -------------------------------------------------
    @staticmethod
    def rp_settings(base_url: str, *, as_env: bool = False) -> dict:
        slugs = (SLUG, BASIC_SLUG)
        values = {
            "redirect_uris": [f"{base_url}/sso/{slug}/oidc/callback/" for slug in slugs],
            "post_logout_redirect_uris": [f"{base_url}/sso/"],
            "backchannel_logout_uri": f"{base_url}/sso/{SLUG}/oidc/backchannel-logout/",
            "basic_backchannel_logout_uri": f"{base_url}/sso/{BASIC_SLUG}/oidc/backchannel-logout/",
        }
        if not as_env:
            return values
        return {f"OP_{k.upper()}": " ".join(v) if isinstance(v, list) else v for k, v in values.items()}

    # --- admin hook ------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: dict | None = None) -> dict:
        response = requests.request(method, f"{self.issuer}/__admin/{path}", json=body, timeout=10,
                                    headers={"Authorization": f"Bearer {self.admin_token}"})
        response.raise_for_status()
        return response.json()

    def serve_rp(self, base_url: str) -> None:
        """Register the broker at ``base_url`` (redirect, post-logout and back-channel URIs)."""
        self._admin("POST", "reconfigure", self.rp_settings(base_url))

    def rotate_key(self) -> tuple[str, str]:
        """Replace the signing key by a new one with another kid; returns (old kid, new kid)."""
        old = self.jwk
        self.jwk = new_signing_jwk()
        kids = self._admin("POST", "reconfigure", {"jwks": {"keys": [self.jwk]}})["kids"]
        assert kids == [self.jwk["kid"]]
        return old["kid"], self.jwk["kid"]

    def state(self) -> dict:
        return self._admin("GET", "state")

    def requests_to(self, path: str) -> int:
        return self.state()["requests"].get(path, 0)

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.state()["events"] if e["type"] == kind]

    def sign(self, claims: dict, *, typ: str = "logout+jwt") -> str:
        """Sign with the provider's current key (only for faults the provider cannot produce)."""
        key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(self.jwk))
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.jwk["kid"], "typ": typ})

    # --- lifecycle -------------------------------------------------------------------------------
    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


@pytest.fixture(scope="module")
def oidc_op(tmp_path_factory) -> Iterator[OpenIDProvider]:
    """One oidc-provider process per test module."""
    _ensure_node_modules()
    op = OpenIDProvider(tmp_path_factory.mktemp("oidc-op") / "op.log")
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def http_broker(settings) -> str:
    """The broker as the Django test client sees it: https://sso.test, never contacted by the OP."""
    settings.BASE_URL = HTTP_BASE_URL
    return HTTP_BASE_URL


@pytest.fixture
def live_broker(live_server, settings, oidc_op) -> str:
    """The broker served over plain HTTP by pytest-django's live server (transactional DB),
    registered at the provider so the provider can call it (back-channel logout)."""
    settings.BASE_URL = live_server.url
    settings.SECURE_COOKIES = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_NAME = "sso_session"
    settings.CSRF_COOKIE_NAME = "csrftoken"
    settings.LOGIN_BINDING_COOKIE = "sso_login"
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 0
    oidc_op.serve_rp(live_server.url)
    yield live_server.url
    oidc_op.serve_rp(HTTP_BASE_URL)


@pytest.fixture
def register_op(oidc_op, monkeypatch):
    """Register one of the provider's clients in the broker (discovery and JWKS fetched now).

    ``secret_env`` names the variable holding the client secret; ``secret`` overrides its value.
    """

    def _register(which: str = "post", *, secret_env: str = SECRET_ENV, secret: str | None = None):
        client = oidc_op.clients[which]
        monkeypatch.setenv(secret_env, client.secret if secret is None else secret)
        return register(
            client.slug, name=f"oidc-provider ({client.auth_method})", issuer=oidc_op.issuer,
            client_id=client.client_id, client_secret_env=secret_env, scopes=SCOPES,
            auth_method=client.auth_method, actor="test",
        )

    return _register


@pytest.fixture
def admin_mapping(db):
    """Role portal_admin, granted to whoever carries groups=api_admins (any IdP)."""
    role = role_service.add_role("portal_admin", actor="test")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="test")
    return role


def follow_to_callback(start: str, callback_prefix: str, session: requests.Session | None = None,
                       max_hops: int = 10) -> tuple[str, requests.Session]:
    """Follow the provider's redirects with ``requests`` until one points at our callback.

    Returns (callback URL, the session holding the provider's cookies)."""
    session = session or requests.Session()
    url = start
    for _ in range(max_hops):
        response = session.get(url, allow_redirects=False, timeout=10)
        assert response.is_redirect, f"{url}: HTTP {response.status_code}: {response.text[:500]}"
        url = urljoin(url, response.headers["Location"])
        if url.startswith(callback_prefix):
            return url, session
    raise AssertionError(f"no redirect to {callback_prefix} after {max_hops} hops (last: {url})")


def login_with_test_client(client, slug: str, next_url: str = "/sso/me/"):
    """The whole code flow: our login URL (Django test client) -> the real provider (requests)
    -> our callback (Django test client). Returns the callback's response."""
    start = client.get(f"/sso/{slug}/login/", {"next": next_url})
    assert start.status_code == 302, start.content[:500]
    callback, _ = follow_to_callback(start["Location"], f"{HTTP_BASE_URL}/sso/{slug}/oidc/callback/")
    parts = urlsplit(callback)
    return client.get(f"{parts.path}?{parts.query}")


class FirstForm(HTMLParser):
    """The first <form> of a page: action and hidden inputs (the provider's logout prompt)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._open = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attributes.get("action") or ""
            self._open = True
        elif tag == "input" and self._open and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._open = False

    @classmethod
    def parse(cls, html: str) -> FirstForm:
        form = cls()
        form.feed(html)
        if form.action is None:
            raise AssertionError(f"no form in page: {html[:500]}")
        return form
