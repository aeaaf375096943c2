"""Admin API fixtures: a real (fake) OpenID Provider whose access tokens the API accepts,
roles and mappings that make its groups admins or auditors, and clients for each kind of
caller (token, browser session with CSRF)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

from broker import tokens
from broker.breakglass import accounts
from broker.login import complete_login
from broker.models import AuditEvent, FederatedIdentity
from broker.services import roles as role_service
from tests.oidc import conftest as oidc_fixtures
from tests.oidc.conftest import register_fake
from tests.oidc.fake_op import FakeOP

# The OIDC tests' provider fixtures, shared.
fake_op = oidc_fixtures.fake_op
make_fake = oidc_fixtures.make_fake
secrets_env = oidc_fixtures.secrets_env

API = "/api/v1"
OTHER_AUDIENCE = "https://other-api.example/api"


def call(client: Client, method: str, path: str, body: Any = None, **extra):
    """One request; JSON bodies (or none, but never a form) for POST/PATCH."""
    kwargs: dict[str, Any] = dict(extra)
    if body is not None or method.upper() in {"POST", "PATCH", "PUT"}:
        kwargs["data"] = json.dumps(body) if body is not None else ""
        kwargs["content_type"] = "application/json"
    return getattr(client, method.lower())(path, **kwargs)


@dataclass
class Api:
    fake: FakeOP
    slug: str = "op"

    def claims(self, groups=("api_admins",), sub: str = "alice", **overrides: Any) -> dict:
        now = int(time.time())
        claims = {"iss": self.fake.issuer, "aud": settings.API_AUDIENCE, "sub": sub, "iat": now,
                  "exp": now + 300, "groups": list(groups), "email": f"{sub}@op.example"}
        claims.update(overrides)
        return claims

    def token(self, groups=("api_admins",), *, sub: str = "alice", alg: str | None = None,
              headers: dict | None = None, **overrides: Any) -> str:
        return self.fake.sign(self.claims(groups, sub, **overrides), alg=alg,
                              headers={"typ": "at+jwt", **(headers or {})})

    def client(self, token: str | None = None) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Bearer {token}") if token else Client()

    def admin(self) -> Client:
        return self.client(self.token(("api_admins",), sub="admin-1"))

    def auditor(self) -> Client:
        return self.client(self.token(("auditors",), sub="auditor-1"))

    def plain(self) -> Client:
        return self.client(self.token(("staff",), sub="user-1"))

    # The tokens that must all be refused with 401 invalid_token.
    def bad_tokens(self) -> dict[str, str]:
        now = int(time.time())
        return {
            "expired": self.token(iat=now - 7200, exp=now - 3600),
            "other_audience": self.token(aud=OTHER_AUDIENCE),
            "id_token": self.fake.id_token("nonce-123"),
            "id_token_for_api": self.token(nonce="nonce-123"),
            "alg_none": self.fake.sign(self.claims(), alg="none", headers={"typ": "at+jwt"}),
            "garbage": "not.a.jwt",
        }


@pytest.fixture(autouse=True)
def _fresh_token_caches():
    """Validated tokens and issuer settings are cached per process: each test starts clean."""
    tokens.reset_caches()
    yield
    tokens.reset_caches()


@pytest.fixture
def api(db, fake_op, secrets_env, make_role) -> Api:
    register_fake(fake_op, slug="op")
    make_role("portal_admin")
    make_role("auditor")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="test")
    role_service.set_mapping(claim="groups", value="auditors", role="auditor", actor="test")
    return Api(fake_op)


def csrf_client(client: Client) -> tuple[Client, str]:
    """Give a CSRF-enforcing client a CSRF cookie; returns (client, token for X-CSRFToken)."""
    secret = _get_new_csrf_string()
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    return client, secret


@pytest.fixture
def session_client(api, make_idp, make_principal, session_request):
    """A browser session from a real SAML-style login through ``complete_login``."""

    def _make(groups=("api_admins",), subject: str = "sam") -> Client:
        from broker.models import IdentityProvider

        if not IdentityProvider.objects.filter(slug="corp").exists():
            make_idp("corp")
        request = session_request()
        complete_login(request, make_principal(subject=subject, attributes={"groups": list(groups)}))
        request.session.save()  # as the session middleware does at the end of the response
        client = Client(enforce_csrf_checks=True)
        client.cookies[settings.SESSION_COOKIE_NAME] = request.session.session_key
        return client

    return _make


@dataclass
class World:
    """One of everything, so every endpoint has an object to point at."""

    idp: str
    role: str
    mapping_id: int
    identity_id: int
    breakglass: str
    event_id: int


@pytest.fixture
def world(api, make_idp, make_role, make_principal, session_request) -> World:
    make_idp("corp")
    make_role("viewer")
    mapping, _ = role_service.set_mapping(claim="groups", value="viewers", role="viewer", idp="corp",
                                          actor="test")
    complete_login(session_request(), make_principal(subject="carol", attributes={"groups": ["viewers"]}))
    account, _ = accounts.create_account("bg-admin", actor="test", webauthn_link=False)
    return World(
        idp="corp", role="viewer", mapping_id=mapping.pk,
        identity_id=FederatedIdentity.objects.get(subject="carol").pk,
        breakglass=account.name, event_id=AuditEvent.objects.latest("id").pk,
    )


def endpoints(w: World) -> list[tuple[str, str, Any]]:
    """(method, path, body) for every Admin API operation."""
    return [
        ("GET", f"{API}/idps/", None),
        ("POST", f"{API}/idps/", {"protocol": "saml", "slug": "new", "metadata_xml": "<x/>"}),
        ("GET", f"{API}/idps/{w.idp}/", None),
        ("PATCH", f"{API}/idps/{w.idp}/", {"name": "Renamed"}),
        ("POST", f"{API}/idps/{w.idp}/enable/", None),
        ("POST", f"{API}/idps/{w.idp}/disable/", None),
        ("POST", f"{API}/idps/{w.idp}/refresh/", None),
        ("GET", f"{API}/roles/", None),
        ("POST", f"{API}/roles/", {"name": "newrole"}),
        ("GET", f"{API}/roles/{w.role}/", None),
        ("PATCH", f"{API}/roles/{w.role}/", {"description": "changed"}),
        ("GET", f"{API}/mappings/", None),
        ("POST", f"{API}/mappings/", {"claim": "groups", "value": "x", "role": w.role}),
        ("GET", f"{API}/mappings/{w.mapping_id}/", None),
        ("PATCH", f"{API}/mappings/{w.mapping_id}/", {"value": "viewers2"}),
        ("POST", f"{API}/mappings/test/", {"claims": {"groups": ["viewers"]}}),
        ("GET", f"{API}/identities/", None),
        ("GET", f"{API}/identities/{w.identity_id}/", None),
        ("GET", f"{API}/breakglass-accounts/", None),
        ("GET", f"{API}/breakglass-accounts/{w.breakglass}/", None),
        ("GET", f"{API}/audit/events/", None),
        ("GET", f"{API}/audit/events/{w.event_id}/", None),
        # Destructive ones last (the admin walk performs them).
        ("DELETE", f"{API}/mappings/{w.mapping_id}/", None),
        ("DELETE", f"{API}/roles/{w.role}/?force=true", None),
        ("DELETE", f"{API}/idps/{w.idp}/?force=true", None),
    ]


def is_audit_read(method: str, path: str) -> bool:
    return method == "GET" and path.startswith(f"{API}/audit/")
