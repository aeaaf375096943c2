"""Fixtures for OIDC tests: a FakeOP on loopback, registered through the broker's own
``discovery.register``; logins driven through Django's test client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from broker.models import AuditEvent
from broker.protocols.oidc import discovery
from tests.oidc.fake_op import FakeOP

SECRET_ENV = "TEST_OIDC_SECRET_PRIMARY"
SECONDARY_ENV = "TEST_OIDC_SECRET_SECONDARY"
PRIMARY_SECRET = "op-secret-1-0123456789abcdefghijklmnopqrstuv"
SECONDARY_SECRET = "op-secret-2-0123456789abcdefghijklmnopqrstuv"


def path_of(url: str) -> str:
    """The path + query of an absolute URL (the test client talks to itself)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class OidcSetup:
    fake: FakeOP
    slug: str
    client: Client = field(default_factory=Client)

    def start(self, client: Client | None = None, next_url: str = "/x") -> str:
        """Begin a login; returns the authorization URL the broker redirected to."""
        response = (client or self.client).get(f"/sso/{self.slug}/login/", {"next": next_url})
        assert response.status_code == 302, response.content[:500]
        assert response["Location"].startswith(self.fake.url("/authorize?")), response["Location"]
        return response["Location"]

    def authorize(self, authorization_url: str) -> str:
        """The browser's visit to the provider: returns the callback URL (absolute)."""
        callback = self.fake.authorize(authorization_url)
        assert callback.startswith(f"https://sso.test/sso/{self.slug}/oidc/callback/?"), callback
        return callback

    def callback(self, callback_url: str, client: Client | None = None):
        return (client or self.client).get(path_of(callback_url))

    def login(self, client: Client | None = None, next_url: str = "/x"):
        return self.callback(self.authorize(self.start(client, next_url)), client)

    def me(self, client: Client | None = None):
        return (client or self.client).get("/sso/me/")


def register_fake(fake: FakeOP, slug: str = "op", **kwargs):
    kwargs.setdefault("client_secret_env", SECRET_ENV)
    kwargs.setdefault("name", "Fake OP")
    kwargs.setdefault("actor", "test")
    return discovery.register(slug, issuer=fake.issuer, client_id=fake.client_id, **kwargs)


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, PRIMARY_SECRET)
    monkeypatch.setenv(SECONDARY_ENV, SECONDARY_SECRET)


@pytest.fixture
def fake_op():
    fake = FakeOP(accepted_secrets={PRIMARY_SECRET})
    yield fake
    fake.close()
    assert not fake.errors, f"the fake OP itself crashed: {fake.errors}"


@pytest.fixture
def make_fake():
    """More providers (a second OP, a TLS one) for a test; all stopped at the end."""
    made: list[FakeOP] = []

    def _make(**kwargs) -> FakeOP:
        kwargs.setdefault("accepted_secrets", {PRIMARY_SECRET})
        fake = FakeOP(**kwargs)
        made.append(fake)
        return fake

    yield _make
    for fake in made:
        fake.close()
    assert not [f.errors for f in made if f.errors], "a fake OP itself crashed"


@pytest.fixture
def oidc(db, fake_op, secrets_env) -> OidcSetup:
    register_fake(fake_op)
    return OidcSetup(fake=fake_op, slug="op")


def failed_events(code: str | None = None):
    events = AuditEvent.objects.filter(action="login.failed")
    return events.filter(reason=code) if code else events


def assert_login_failed(setup: OidcSetup, response, code: str, *, status: int | None = None,
                        client: Client | None = None) -> None:
    """No session, no login.succeeded, a login.failed with ``code``, an error page naming it."""
    body = response.content.decode(errors="replace")
    assert response.status_code != 500, body[:1000]
    shown = re.search(r'<code id="error-code">([^<]*)</code>', body)
    last = failed_events().order_by("-id").values_list("reason", "data").first()
    assert shown is not None, (response.status_code, body[:500])
    assert shown.group(1) == code, (shown.group(1), last)
    assert response.status_code >= 400, response.status_code
    if status is not None:
        assert response.status_code == status, (response.status_code, last)
    reasons = list(failed_events().values_list("reason", flat=True))
    assert code in reasons, reasons
    event = failed_events(code).latest("id")
    assert event.idp == setup.slug and event.outcome == "failure"
    assert not AuditEvent.objects.filter(action="login.succeeded").exists()
    assert setup.me(client).status_code == 401
