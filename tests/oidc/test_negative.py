"""OIDC logins that must fail: each leaves no session, no ``login.succeeded``, a
``login.failed`` audit event with the specific reason code, and an error page (never a 500)
that names the code."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.cache import cache
from django.test import Client

from broker import loginstate
from broker.errors import LoginError
from broker.models import AuditEvent, IdentityProvider
from tests.oidc.conftest import (
    PRIMARY_SECRET,
    OidcSetup,
    assert_login_failed,
    query_of,
    register_fake,
)
from tests.oidc.fake_op import DROP, CountingServer, FakeOP, SigningKey, new_rsa_key, self_signed_cert

pytestmark = pytest.mark.django_db



def _now() -> int:
    return int(time.time())


# --- ID token faults: one knob each ------------------------------------------------------------

Knobs = Callable[[FakeOP], None]


def claims(**overrides) -> Knobs:
    def apply(fake: FakeOP) -> None:
        fake.id_token_overrides = {k: (v(fake) if callable(v) else v) for k, v in overrides.items()}

    return apply


def knobs(**values) -> Knobs:
    def apply(fake: FakeOP) -> None:
        for name, value in values.items():
            setattr(fake, name, value(fake) if callable(value) else value)

    return apply


def _public_pem(fake: FakeOP) -> bytes:
    return fake.signing_rsa.public_pem()


def _other_key_same_kid(fake: FakeOP) -> SigningKey:
    return SigningKey(fake.signing_rsa.kid, new_rsa_key("x").private, "RSA")




TOKEN_CASES: list = [
    ("alg_none", knobs(alg="none"), "oidc_algorithm"),
    ("alg_None_capitalised", knobs(alg="None"), "oidc_algorithm"),
    ("hs256_with_public_key_pem", knobs(alg="HS256", sign_with=_public_pem), "oidc_algorithm"),
    ("rs512_not_on_allow_list", knobs(alg="RS512"), "oidc_algorithm"),
    ("tampered_signature", knobs(tamper_signature=True), "invalid_signature"),
    ("signed_by_other_key_same_kid", knobs(sign_with=_other_key_same_kid), "invalid_signature"),
    ("wrong_iss", claims(iss="https://evil.example"), "oidc_issuer"),
    ("missing_iss", claims(iss=DROP), "oidc_claims"),
    ("iss_substring", claims(iss=lambda f: f.issuer[:-1]), "oidc_issuer"),
    ("iss_superstring_path", claims(iss=lambda f: f.issuer + "/evil"), "oidc_issuer"),
    ("iss_superstring_port", claims(iss=lambda f: f.issuer + "0"), "oidc_issuer"),
    ("iss_trailing_slash", claims(iss=lambda f: f.issuer + "/"), "oidc_issuer"),
    ("iss_list", claims(iss=lambda f: [f.issuer]), "oidc_issuer"),
    ("missing_aud", claims(aud=DROP), "oidc_claims"),
    ("wrong_aud", claims(aud="another-client"), "oidc_audience"),
    ("aud_substring", claims(aud="broker-clien"), "oidc_audience"),
    ("aud_list_without_us", claims(aud=["another-client"]), "oidc_audience"),
    ("several_aud_without_azp", claims(aud=["broker-client", "other-api"]), "oidc_audience"),
    ("azp_other_client", claims(azp="another-client"), "oidc_audience"),
    ("several_aud_azp_other", claims(aud=["broker-client", "x"], azp="x"), "oidc_audience"),
    ("missing_iat", claims(iat=DROP), "oidc_claims"),
    ("missing_exp", claims(exp=DROP), "oidc_claims"),
    ("missing_sub", claims(sub=DROP), "oidc_claims"),
    ("empty_sub", claims(sub=""), "oidc_claims"),
    ("blank_sub", claims(sub="   "), "oidc_claims"),
    pytest.param(claims(sub=12345), "oidc_claims", id="numeric_sub"),
    pytest.param(claims(exp="tomorrow"), "oidc_claims", id="exp_not_a_number"),
    ("iat_not_a_number", claims(iat="yesterday"), "oidc_claims"),
    ("expired_beyond_skew", claims(iat=lambda f: _now() - 600, exp=lambda f: _now() - 120),
     "token_expired"),
    ("iat_in_future_beyond_skew", claims(iat=lambda f: _now() + 300, exp=lambda f: _now() + 900),
     "token_not_yet_valid"),
    ("nbf_in_future", claims(nbf=lambda f: _now() + 300), "token_not_yet_valid"),
    ("wrong_nonce", claims(nonce="not-the-nonce-we-sent-0123456789"), "oidc_nonce"),
    ("missing_nonce", claims(nonce=DROP), "oidc_nonce"),
    ("nonce_not_a_string", claims(nonce=["x"]), "oidc_nonce"),
    ("userinfo_sub_mismatch", knobs(userinfo_sub="mallory"), "oidc_userinfo_mismatch"),
    ("userinfo_without_sub", knobs(userinfo_sub=DROP), "oidc_userinfo_mismatch"),
]


def _as_param(case) -> object:
    if isinstance(case[0], str):  # (id, knob, code); pytest.param(...) entries pass through
        return pytest.param(case[1], case[2], id=case[0])
    return case


@pytest.mark.parametrize(("knob", "code"), [_as_param(c) for c in TOKEN_CASES])
def test_id_token_fault(oidc: OidcSetup, knob, code):
    knob(oidc.fake)
    response = oidc.login()
    assert_login_failed(oidc, response, code)


def test_hs256_allowed_but_signed_with_public_key_pem(db, fake_op, secrets_env):
    """Key-type confusion: even with HS256 on the allow-list, the HMAC key is our client
    secret, never the provider's public key."""
    register_fake(fake_op, algorithms=["RS256", "HS256"])
    setup = OidcSetup(fake=fake_op, slug="op")
    fake_op.alg = "HS256"
    for pem in (fake_op.signing_rsa.public_pem(),
                fake_op.signing_rsa.public_pem().strip(),
                json.dumps(fake_op.signing_rsa.public_jwk()).encode()):
        fake_op.sign_with = pem
        response = setup.login()
        assert_login_failed(setup, response, "invalid_signature")
    # The honest HS256 token (our secret) would have worked: see test_flow.
    fake_op.sign_with = PRIMARY_SECRET.encode() + b"x"
    assert_login_failed(setup, setup.login(), "invalid_signature")


# --- header-supplied keys (jku / x5u / jwk / x5c) ------------------------------------------------


@pytest.fixture
def attacker():
    key = new_rsa_key("attacker-kid")
    cert = self_signed_cert(key.private, "attacker")
    server = CountingServer({"keys": [key.public_jwk()]})
    yield key, cert, server
    server.stop()


@pytest.mark.parametrize("kid", ["attacker-kid", "provider-kid"])
@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c", "all"])
def test_header_supplied_keys_are_ignored(oidc: OidcSetup, attacker, header, kid):
    key, cert, server = attacker
    fake = oidc.fake
    jwks_before = fake.jwks_requests
    headers = {
        "jku": server.url + "/jwks.json",
        "x5u": server.url + "/cert.pem",
        "jwk": key.public_jwk(),
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    chosen = headers if header == "all" else {header: headers[header]}
    fake.header_overrides = {**chosen, "kid": key.kid if kid == "attacker-kid" else fake.signing_rsa.kid}
    fake.sign_with = key.private
    response = oidc.login()
    assert_login_failed(oidc, response, "invalid_signature")
    assert server.hits == 0, server.paths
    # Only the provider's own JWKS was consulted (one refetch at most for an unknown kid).
    assert fake.jwks_requests - jwks_before <= 1


def test_jku_pointing_at_provider_key_still_uses_cached_jwks(oidc: OidcSetup, attacker):
    """A correctly signed token with a jku header: validated with the provider's JWKS only."""
    _, _, server = attacker
    oidc.fake.header_overrides = {"jku": server.url + "/jwks.json", "x5u": server.url + "/c.pem"}
    response = oidc.login()
    assert response.status_code == 302, response.content[:500]
    assert server.hits == 0


# --- state, PKCE, mix-up -----------------------------------------------------------------------


def test_reused_state(oidc: OidcSetup):
    callback = oidc.authorize(oidc.start())
    first = oidc.callback(callback)
    assert first.status_code == 302
    second = oidc.callback(callback)
    body = second.content.decode()
    assert second.status_code == 400 and '<code id="error-code">state_mismatch</code>' in body
    assert AuditEvent.objects.get(action="login.failed").reason == "state_mismatch"
    assert AuditEvent.objects.filter(action="login.succeeded").count() == 1
    # The replayed code never reached the provider a second time.
    assert len(oidc.fake.token_requests) == 1


def test_reused_state_after_a_failed_callback(oidc: OidcSetup):
    oidc.fake.token_error = "invalid_grant"
    callback = oidc.authorize(oidc.start())
    assert_login_failed(oidc, oidc.callback(callback), "invalid_grant")
    oidc.fake.token_error = None
    assert_login_failed(oidc, oidc.callback(callback), "state_mismatch")
    assert len(oidc.fake.token_requests) == 1


def test_expired_state(oidc: OidcSetup, settings):
    settings.LOGIN_STATE_TTL = 5
    authorization_url = oidc.start()
    state = query_of(authorization_url)["state"]
    key = loginstate._key("oidc", state)
    ttl = cache.ttl(key)
    assert 0 < ttl <= 5  # the pending login really expires
    cache.delete(key)  # ... as it would after 5 s, without sleeping
    assert_login_failed(oidc, oidc.callback(oidc.authorize(authorization_url)), "state_mismatch")
    assert oidc.fake.token_requests == []


def test_state_from_another_browser(oidc: OidcSetup):
    callback = oidc.authorize(oidc.start())
    other = Client()
    assert_login_failed(oidc, oidc.callback(callback, client=other), "state_mismatch", client=other)
    assert oidc.me().status_code == 401
    assert oidc.fake.token_requests == []


@pytest.mark.parametrize("state", ["", "x" * 43, "not-a-state"])
def test_missing_or_unknown_state(oidc: OidcSetup, state):
    oidc.start()
    response = oidc.client.get("/sso/op/oidc/callback/", {"code": "abc", "state": state})
    assert_login_failed(oidc, response, "state_mismatch")


def test_code_without_stored_pkce_verifier(oidc: OidcSetup):
    authorization_url = oidc.start()
    key = loginstate._key("oidc", query_of(authorization_url)["state"])
    record = json.loads(cache.get(key))
    assert record["data"]["verifier"]
    record["data"]["verifier"] = ""
    cache.set(key, json.dumps(record), timeout=60)
    assert_login_failed(oidc, oidc.callback(oidc.authorize(authorization_url)), "oidc_pkce")
    assert oidc.fake.token_requests == []


def test_callback_iss_of_another_provider(oidc: OidcSetup):
    oidc.fake.callback_iss = "https://other-op.example"
    assert_login_failed(oidc, oidc.login(), "oidc_mixup")
    assert oidc.fake.token_requests == []


def test_callback_without_iss_when_provider_advertises_it(db, fake_op, secrets_env):
    fake_op.discovery_overrides = {"authorization_response_iss_parameter_supported": True}
    register_fake(fake_op)
    setup = OidcSetup(fake=fake_op, slug="op")
    assert_login_failed(setup, setup.login(), "oidc_mixup")
    fake_op.send_iss = True  # control: with iss it works
    assert setup.login(client=Client()).status_code == 302


def test_state_of_one_provider_at_anothers_callback(db, fake_op, make_fake, secrets_env):
    register_fake(fake_op)
    other = make_fake()
    register_fake(other, slug="other")
    setup = OidcSetup(fake=fake_op, slug="op")
    callback = setup.authorize(setup.start())
    response = setup.client.get(callback.replace("/sso/op/", "/sso/other/").replace("https://sso.test", ""))
    body = response.content.decode()
    assert response.status_code == 400 and '<code id="error-code">oidc_mixup</code>' in body
    assert AuditEvent.objects.get(action="login.failed").idp == "other"
    assert setup.me().status_code == 401
    assert fake_op.token_requests == [] and other.token_requests == []


def test_provider_error_response(oidc: OidcSetup):
    oidc.fake.authorize_error = "access_denied"
    assert_login_failed(oidc, oidc.login(), "oidc_error")


# --- token endpoint -----------------------------------------------------------------------------


def test_invalid_grant(oidc: OidcSetup):
    oidc.fake.token_error = "invalid_grant"
    response = oidc.login()
    assert_login_failed(oidc, response, "invalid_grant", status=400)
    assert "invalid_grant" in response.content.decode()


def test_invalid_client_with_both_secrets_wrong(db, fake_op, secrets_env, monkeypatch):
    from tests.oidc.conftest import SECONDARY_ENV

    idp = register_fake(fake_op)
    idp.config = {**idp.config, "client_secret_secondary_env": SECONDARY_ENV}
    idp.save()
    fake_op.accepted_secrets = {"a-third-secret"}
    setup = OidcSetup(fake=fake_op, slug="op")
    assert_login_failed(setup, setup.login(), "invalid_client")
    assert [r.outcome for r in fake_op.token_requests] == ["invalid_client", "invalid_client"]
    assert not AuditEvent.objects.filter(action="oidc.secondary_secret_used").exists()


def test_client_secret_unset(oidc: OidcSetup, monkeypatch):
    from tests.oidc.conftest import SECRET_ENV

    monkeypatch.delenv(SECRET_ENV)
    response = oidc.login()
    assert_login_failed(oidc, response, "invalid_client")
    assert oidc.fake.token_requests == []


def test_token_response_without_id_token(oidc: OidcSetup):
    oidc.fake.token_omit_id_token = True
    assert_login_failed(oidc, oidc.login(), "oidc_error")


def test_token_endpoint_server_error(oidc: OidcSetup):
    oidc.fake.status["token"] = 502
    assert_login_failed(oidc, oidc.login(), "idp_unavailable", status=503)


def test_provider_down_at_callback(oidc: OidcSetup):
    callback = oidc.authorize(oidc.start())
    oidc.fake.stop()  # token endpoint: connection refused
    assert_login_failed(oidc, oidc.callback(callback), "idp_unavailable", status=503)


def test_userinfo_down(oidc: OidcSetup):
    oidc.fake.status["userinfo"] = 503
    assert_login_failed(oidc, oidc.login(), "idp_unavailable", status=503)


def test_token_endpoint_with_untrusted_certificate(oidc: OidcSetup, make_fake):
    tls = make_fake(tls=True)
    callback = oidc.authorize(oidc.start())
    idp = IdentityProvider.objects.get(slug="op")
    idp.config = {**idp.config, "discovery": {**idp.config["discovery"], "token_endpoint": tls.url("/token")}}
    idp.save()
    response = oidc.callback(callback)
    assert_login_failed(oidc, response, "OIDC_CERT_ERR", status=502)
    assert tls.token_requests == []  # the handshake failed: nothing was sent


# --- registration --------------------------------------------------------------------------------


def test_discovery_issuer_mismatch_refuses_registration(db, fake_op, secrets_env):
    for lie in ("https://evil.example", fake_op.issuer + "/", fake_op.issuer[:-1]):
        fake_op.discovery_issuer = lie
        with pytest.raises(LoginError) as info:
            register_fake(fake_op)
        assert info.value.code == "oidc_discovery_mismatch"
    assert not IdentityProvider.objects.exists()
    assert not AuditEvent.objects.filter(action="idp.created").exists()


def test_discovery_issuer_mismatch_via_cli(db, fake_op, secrets_env):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from tests.oidc.conftest import SECRET_ENV

    fake_op.discovery_issuer = "https://evil.example"
    with pytest.raises(CommandError) as info:
        call_command("idp", "add-oidc", "op", "--issuer", fake_op.issuer, "--client-id", "c",
                     "--client-secret-env", SECRET_ENV)
    assert info.value.returncode == 2 and "oidc_discovery_mismatch" in str(info.value)
    assert not IdentityProvider.objects.exists()


def test_discovery_without_s256_is_refused(db, fake_op, secrets_env):
    fake_op.discovery_overrides = {"code_challenge_methods_supported": ["plain"]}
    with pytest.raises(LoginError) as info:
        register_fake(fake_op)
    assert info.value.code == "idp_unavailable"
    assert not IdentityProvider.objects.exists()


def test_registration_refused_when_jwks_unavailable_leaves_nothing(db, fake_op, secrets_env):
    fake_op.status["jwks"] = 503
    with pytest.raises(LoginError) as info:
        register_fake(fake_op)
    assert info.value.code == "idp_unavailable"
    assert not IdentityProvider.objects.filter(slug="op").exists()


# --- never a 500 ---------------------------------------------------------------------------------


def test_garbage_tokens_never_500(oidc: OidcSetup):
    """A token endpoint answering with junk as id_token: an error page with a code, not a 500."""
    original = oidc.fake.id_token
    for junk in ("", "a.b", "a.b.c", "....", "eyJ.eyJ.x", "x" * 20000):
        oidc.fake.id_token = lambda nonce, junk=junk: junk  # type: ignore[method-assign]
        client = Client()
        response = oidc.login(client=client)
        assert response.status_code in (400, 502, 503), (junk[:20], response.status_code)
        assert b'id="error-code"' in response.content
        assert oidc.me(client).status_code == 401
    oidc.fake.id_token = original  # type: ignore[method-assign]
    assert not AuditEvent.objects.filter(action="login.succeeded").exists()


# --- signed userinfo and malformed token responses -------------------------------------------------


def test_signed_userinfo_is_accepted(oidc: OidcSetup):
    """Control for the cases below."""
    from broker.models import FederatedIdentity

    oidc.fake.userinfo_jwt = True
    oidc.fake.userinfo_claims = {"department": "ops"}
    assert oidc.login().status_code == 302
    link = FederatedIdentity.objects.get(idp__slug="op", subject="alice")
    assert link.last_attributes.get("department") == ["ops"], link.last_attributes


def test_unsigned_userinfo_jwt(oidc: OidcSetup):
    oidc.fake.userinfo_jwt = True
    oidc.fake.userinfo_jwt_alg = "none"
    assert_login_failed(oidc, oidc.login(), "oidc_algorithm")


def test_signed_userinfo_for_another_subject(oidc: OidcSetup):
    oidc.fake.userinfo_jwt = True
    oidc.fake.userinfo_sub = "mallory"
    assert_login_failed(oidc, oidc.login(), "oidc_userinfo_mismatch")


def test_signed_userinfo_with_bad_signature(oidc: OidcSetup):
    from tests.oidc.fake_op import RawBody

    fake = oidc.fake
    forged = fake.sign({"sub": "alice", "email": "a@evil.example"}, key=_other_key_same_kid(fake), headers={})
    fake.userinfo_raw = RawBody("application/jwt", forged)
    assert_login_failed(oidc, oidc.login(), "invalid_signature")


def test_malformed_userinfo_jwt_is_not_a_500(oidc: OidcSetup):
    from tests.oidc.fake_op import RawBody

    oidc.fake.userinfo_raw = RawBody("application/jwt", "not-a-jwt")
    oidc.client.raise_request_exception = False
    assert_login_failed(oidc, oidc.login(), "invalid_signature")


@pytest.mark.parametrize("junk", [12345, True])
def test_non_string_id_token_is_not_a_500(oidc: OidcSetup, junk):
    oidc.fake.id_token = lambda nonce: junk  # type: ignore[method-assign]
    oidc.client.raise_request_exception = False
    response = oidc.login()
    assert response.status_code != 500
    assert b'id="error-code"' in response.content
