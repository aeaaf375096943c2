"""OIDC logins that must work: the code flow with PKCE, client authentication, secret
rotation, back-channel logout and discovery refresh, against the FakeOP over real HTTP."""

from __future__ import annotations

import io
import json
import re
import time

import certifi
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from broker.models import AuditEvent, FederatedIdentity, IdentityProvider
from broker.services import roles as role_service
from tests.oidc.conftest import (
    PRIMARY_SECRET,
    SECONDARY_ENV,
    SECONDARY_SECRET,
    SECRET_ENV,
    OidcSetup,
    query_of,
    register_fake,
)
from tests.oidc.fake_op import BACKCHANNEL_EVENT, DROP, SigningKey, new_rsa_key, s256

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def succeeded() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="login.succeeded").order_by("id"))


# --- the code flow --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_happy_path_maps_groups_to_roles(oidc: OidcSetup, alg):
    role_service.add_role("portal_admin", actor="t")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    oidc.fake.alg = alg
    response = oidc.login(next_url="/x")
    assert response.status_code == 302, response.content[:1000]
    assert response["Location"] == "/x"
    me = oidc.me()
    assert me.status_code == 200
    assert me.json()["subject"] == "alice" and me.json()["idp"] == "op"
    assert me.json()["roles"] == ["portal_admin"]
    [event] = succeeded()
    assert (event.idp, event.subject, event.data["protocol"]) == ("op", "alice", "oidc")
    assert event.data["roles"] == ["portal_admin"]
    link = FederatedIdentity.objects.get(idp__slug="op", subject="alice")
    assert "api_admins" in link.last_attributes["groups"]
    assert oidc.fake.userinfo_requests == 1
    assert not AuditEvent.objects.filter(action="login.failed").exists()


def test_login_without_mapped_group_has_no_role(oidc: OidcSetup):
    role_service.add_role("portal_admin", actor="t")
    role_service.set_mapping(claim="groups", value="api_admins", role="portal_admin", actor="t")
    oidc.fake.groups = ["staff"]
    assert oidc.login().status_code == 302
    assert oidc.me().json()["roles"] == []


def test_authorization_request_and_pkce_checked_at_the_provider(oidc: OidcSetup):
    authorization_url = oidc.start()
    query = query_of(authorization_url)
    assert query["response_type"] == "code" and query["client_id"] == "broker-client"
    assert query["redirect_uri"] == "https://sso.test/sso/op/oidc/callback/"
    assert "openid" in query["scope"].split()
    assert query["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    response = oidc.callback(oidc.authorize(authorization_url))
    assert response.status_code == 302, response.content[:1000]
    [token_request] = oidc.fake.token_requests
    verifier = token_request.form["code_verifier"]
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9._~-]+", verifier)
    assert s256(verifier) == query["code_challenge"] == token_request.code_challenge
    assert token_request.pkce_verified and token_request.outcome == "ok"
    assert token_request.form["redirect_uri"] == query["redirect_uri"]
    assert token_request.form["grant_type"] == "authorization_code"
    # A new login gets a new verifier, state and nonce.
    second = query_of(oidc.start(Client()))
    assert {second["state"], second["nonce"], second["code_challenge"]}.isdisjoint(
        {query["state"], query["nonce"], query["code_challenge"]})


def test_callback_with_rfc9207_iss(oidc: OidcSetup):
    oidc.fake.send_iss = True
    assert oidc.login().status_code == 302
    assert oidc.me().status_code == 200


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_authentication_methods(db, fake_op, monkeypatch, method):
    # Characters that form-encoding must escape in HTTP Basic (RFC 6749, 2.3.1).
    secret = "s:e+c r/e%t=&"
    monkeypatch.setenv(SECRET_ENV, secret)
    fake_op.accepted_secrets = {secret}
    register_fake(fake_op, auth_method=method)
    setup = OidcSetup(fake=fake_op, slug="op")
    response = setup.login()
    assert response.status_code == 302, response.content[:1000]
    [token_request] = fake_op.token_requests
    assert token_request.auth_method == method
    assert token_request.secret == secret and token_request.client_id == "broker-client"
    if method == "client_secret_basic":
        assert "client_secret" not in token_request.form
    assert setup.me().status_code == 200


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_secret_rotation_secondary_then_promote(db, fake_op, secrets_env, method):
    register_fake(fake_op, auth_method=method)
    setup = OidcSetup(fake=fake_op, slug="op")
    # The provider has rotated: only the new secret is accepted.
    fake_op.accepted_secrets = {SECONDARY_SECRET}
    out, _ = run("idp", "rotate-secret", "op", "--secondary-env", SECONDARY_ENV)
    assert "secondary" in out
    response = setup.login()
    assert response.status_code == 302, response.content[:1000]
    assert [r.outcome for r in fake_op.token_requests] == ["invalid_client", "ok"]
    assert [r.secret for r in fake_op.token_requests] == [PRIMARY_SECRET, SECONDARY_SECRET]
    used = AuditEvent.objects.get(action="oidc.secondary_secret_used")
    assert used.idp == "op"
    # Audits hold references, never the values.
    for event in AuditEvent.objects.all():
        dumped = json.dumps(event.data)
        assert PRIMARY_SECRET not in dumped and SECONDARY_SECRET not in dumped

    run("idp", "rotate-secret", "op", "--promote")
    fake_op.token_requests.clear()
    other = Client()
    response = setup.login(client=other)
    assert response.status_code == 302, response.content[:1000]
    assert [(r.outcome, r.secret) for r in fake_op.token_requests] == [("ok", SECONDARY_SECRET)]
    assert AuditEvent.objects.filter(action="oidc.secondary_secret_used").count() == 1
    rotated = AuditEvent.objects.filter(action="idp.secret_rotated").order_by("id")
    assert [e.reason for e in rotated] == ["secondary_set", "promoted"]
    assert IdentityProvider.objects.get(slug="op").config["client_secret_env"] == SECONDARY_ENV


def test_loading_rotation_module_keeps_logins_working(oidc: OidcSetup, monkeypatch):
    import importlib
    import sys

    # As in a fresh process: the rotation module is not loaded yet.
    monkeypatch.delitem(sys.modules, "broker.protocols.oidc.rotation", raising=False)
    importlib.import_module("broker.protocols.oidc.rotation")  # what `idp rotate-secret` does

    response = oidc.login()
    assert response.status_code == 302


def test_hs256_when_configured_uses_the_client_secret(db, fake_op, secrets_env):
    """Control for the HS256 attacks in test_negative: the allowed, honest HS256 works."""
    register_fake(fake_op, algorithms=["RS256", "HS256"])
    fake_op.alg = "HS256"
    fake_op.sign_with = PRIMARY_SECRET.encode()
    setup = OidcSetup(fake=fake_op, slug="op")
    assert setup.login().status_code == 302
    assert setup.me().status_code == 200


def test_hs256_after_rotation_uses_the_secret_that_authenticated(db, fake_op, secrets_env):
    idp = register_fake(fake_op, algorithms=["HS256"])
    idp.config = {**idp.config, "client_secret_secondary_env": SECONDARY_ENV}
    idp.save()
    fake_op.accepted_secrets = {SECONDARY_SECRET}
    fake_op.alg = "HS256"
    fake_op.sign_with = SECONDARY_SECRET.encode()
    setup = OidcSetup(fake=fake_op, slug="op")
    assert setup.login().status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_unsafe_next_is_replaced(oidc: OidcSetup, target):
    response = oidc.login(next_url=target)
    assert response.status_code == 302
    assert response["Location"] == "/sso/me/"


@pytest.mark.parametrize("delta", [-30, 30])
def test_timestamps_within_clock_skew_are_accepted(oidc: OidcSetup, delta):
    now = int(time.time())
    if delta < 0:  # expired 30 s ago, skew 60 s
        oidc.fake.id_token_overrides = {"iat": now - 300, "exp": now + delta}
    else:  # issued 30 s "in the future" (the provider's clock is ahead)
        oidc.fake.id_token_overrides = {"iat": now + delta, "nbf": now + delta}
    response = oidc.login()
    assert response.status_code == 302, response.content[:1000]


def test_several_audiences_with_azp_are_accepted(oidc: OidcSetup):
    oidc.fake.id_token_overrides = {"aud": ["broker-client", "other-api"], "azp": "broker-client"}
    assert oidc.login().status_code == 302


# --- TLS back channel with a private CA --------------------------------------------------------


def _register_tls(make_fake) -> OidcSetup:
    tls = make_fake(tls=True)
    register_fake(tls, slug="tlsop", options={"ca_file": tls.ca_file})
    return OidcSetup(fake=tls, slug="tlsop")


def test_tls_provider_with_its_ca_file(db, make_fake, secrets_env, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    setup = _register_tls(make_fake)
    response = setup.login()
    assert response.status_code == 302, response.content[:1000]


def test_tls_provider_ca_file_wins_over_requests_ca_bundle(db, make_fake, secrets_env, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # as many container images do
    setup = _register_tls(make_fake)
    response = setup.login()
    assert response.status_code == 302, response.content[:1000]


# --- back-channel logout -----------------------------------------------------------------------


def _two_sessions(oidc: OidcSetup) -> tuple[Client, Client]:
    first, second = Client(), Client()
    oidc.fake.sid = "sid-first"
    assert oidc.login(client=first).status_code == 302
    oidc.fake.sid = "sid-second"
    assert oidc.login(client=second).status_code == 302
    assert oidc.me(first).status_code == 200 and oidc.me(second).status_code == 200
    return first, second


def _post_logout(token: str):
    return Client().post("/sso/op/oidc/backchannel-logout/", {"logout_token": token})


def test_backchannel_logout_ends_only_that_session(oidc: OidcSetup):
    first, second = _two_sessions(oidc)
    token = oidc.fake.logout_token(sid="sid-first", sub="alice")
    response = _post_logout(token)
    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    assert oidc.me(first).status_code == 401
    assert oidc.me(second).status_code == 200
    event = AuditEvent.objects.get(action="oidc.backchannel_logout", outcome="success")
    assert event.data["sessions_ended"] == 1

    # The same token again: refused, nothing else ends.
    replay = _post_logout(token)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_request"
    assert oidc.me(second).status_code == 200
    failure = AuditEvent.objects.filter(action="oidc.backchannel_logout", outcome="failure").latest("id")
    assert failure.reason == "oidc_claims" and "replay" in failure.data["detail"]


def test_backchannel_logout_by_subject_ends_all_of_its_sessions(oidc: OidcSetup):
    first, second = _two_sessions(oidc)
    assert _post_logout(oidc.fake.logout_token(sub="alice")).status_code == 200
    assert oidc.me(first).status_code == 401 and oidc.me(second).status_code == 401


@pytest.mark.parametrize("case", ["nonce", "wrong_event", "no_event", "no_sid_no_sub", "wrong_aud",
                                  "wrong_iss", "foreign_key", "no_jti"])
def test_backchannel_logout_refusals(oidc: OidcSetup, case):
    first, second = _two_sessions(oidc)
    fake = oidc.fake
    if case == "nonce":
        token = fake.logout_token(sid="sid-first", nonce="n-0123456789")
    elif case == "wrong_event":
        token = fake.logout_token(sid="sid-first", events={"http://schemas.openid.net/event/other": {}})
    elif case == "no_event":
        token = fake.logout_token(sid="sid-first", events={})
    elif case == "no_sid_no_sub":
        token = fake.logout_token()
    elif case == "wrong_aud":
        token = fake.logout_token(sid="sid-first", aud="another-client")
    elif case == "wrong_iss":
        token = fake.logout_token(sid="sid-first", iss=fake.issuer + "/evil")
    elif case == "no_jti":
        token = fake.logout_token(sid="sid-first", jti=DROP)
    else:  # signed by a key that is not the provider's, with the provider's kid
        attacker = new_rsa_key("x")
        claims = {"iss": fake.issuer, "aud": fake.client_id, "iat": int(time.time()), "jti": "j1",
                  "sid": "sid-first", "events": {BACKCHANNEL_EVENT: {}}}
        token = fake.sign(claims, alg="RS256", key=SigningKey(fake.signing_rsa.kid, attacker.private, "RSA"))
    response = _post_logout(token)
    assert response.status_code == 400, response.content
    assert oidc.me(first).status_code == 200 and oidc.me(second).status_code == 200
    assert not AuditEvent.objects.filter(action="oidc.backchannel_logout", outcome="success").exists()


def test_backchannel_logout_token_older_than_the_replay_window_is_refused(oidc: OidcSetup):
    first, second = _two_sessions(oidc)
    old = int(time.time()) - 3600
    token = oidc.fake.logout_token(sid="sid-first", iat=old, exp=DROP)
    assert _post_logout(token).status_code == 400
    assert oidc.me(first).status_code == 200


# --- discovery refresh -------------------------------------------------------------------------


def test_discovery_refresh_keeps_last_known_good_when_provider_down(oidc: OidcSetup):
    before = IdentityProvider.objects.get(slug="op").config
    oidc.fake.stop()
    with pytest.raises(CommandError) as info:
        run("idp", "refresh", "op")
    assert info.value.returncode == 1
    assert IdentityProvider.objects.get(slug="op").config == before
    event = AuditEvent.objects.get(action="idp.discovery_refresh_failed")
    assert event.outcome == "failure" and event.idp == "op" and event.reason == "idp_unavailable"
    assert not AuditEvent.objects.filter(action="idp.discovery_changed").exists()


def test_discovery_refresh_refuses_another_issuer_and_keeps_config(oidc: OidcSetup):
    before = IdentityProvider.objects.get(slug="op").config
    oidc.fake.discovery_issuer = "https://evil.example"
    oidc.fake.discovery_overrides = {"token_endpoint": "https://evil.example/token"}
    with pytest.raises(CommandError) as info:
        run("idp", "refresh", "op")
    assert info.value.returncode == 1
    assert IdentityProvider.objects.get(slug="op").config == before
    assert AuditEvent.objects.get(action="idp.discovery_refresh_failed").reason == "oidc_discovery_mismatch"


def test_discovery_refresh_records_changes(oidc: OidcSetup):
    oidc.fake.discovery_overrides = {"userinfo_endpoint": oidc.fake.url("/userinfo2")}
    out, _ = run("idp", "refresh", "op")
    assert "userinfo2" in out
    change = AuditEvent.objects.get(action="idp.discovery_changed")
    assert change.data["changes"]["userinfo_endpoint"]["after"].endswith("/userinfo2")
    config = IdentityProvider.objects.get(slug="op").config
    assert config["discovery"]["userinfo_endpoint"].endswith("/userinfo2")


def test_register_via_cli_prints_redirect_uri(db, fake_op, secrets_env):
    out, _ = run("idp", "add-oidc", "cliop", "--issuer", fake_op.issuer, "--client-id", fake_op.client_id,
                 "--client-secret-env", SECRET_ENV)
    assert "https://sso.test/sso/cliop/oidc/callback/" in out
    assert "https://sso.test/sso/cliop/oidc/backchannel-logout/" in out
    assert IdentityProvider.objects.get(slug="cliop").config["discovery"]["issuer"] == fake_op.issuer
    assert cache.get("oidc:jwks:cliop")["keys"]


def test_register_refuses_none_and_missing_secret(db, fake_op, secrets_env):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        register_fake(fake_op, algorithms=["RS256", "none"])
    with pytest.raises(ValidationError):
        register_fake(fake_op, client_secret_env="")
    assert not IdentityProvider.objects.exists()



def test_rp_initiated_logout_goes_to_end_session_with_id_token_hint(oidc: OidcSetup):
    from urllib.parse import parse_qs, urlsplit

    import jwt

    assert oidc.login().status_code == 302
    response = oidc.client.post("/sso/logout/", {"next": "/portal/"})
    # The local session ended first...
    assert oidc.me().status_code == 401
    # ...then the browser goes to the provider to end its session too.
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == oidc.fake.url("/logout")
    query = parse_qs(location.query)
    assert query["post_logout_redirect_uri"] == ["https://sso.test/sso/"]
    hint = jwt.decode(query["id_token_hint"][0], options={"verify_signature": False})
    assert hint["iss"] == oidc.fake.issuer and "nonce" in hint  # the ID token of this login
    assert AuditEvent.objects.filter(action="oidc.end_session", idp="op").exists()
