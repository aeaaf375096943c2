"""The break-glass login at /breakglass/: both factors required, independent of every IdP and
of Redis, never usable by federated users, never usable through SSO, short sessions."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from django.conf import settings
from django.contrib.auth import SESSION_KEY, authenticate, get_user_model
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
from django.core.cache import cache
from django.test import Client

from broker.breakglass import sessions
from broker.errors import LoginError
from broker.login import complete_login
from broker.models import AuditEvent, BreakGlassAccount, FederatedIdentity, IdentityProvider
from broker.protocols.saml import metadata as saml_metadata
from tests.breakglass.conftest import LOGIN, VERIFY, login

pytestmark = pytest.mark.django_db
User = get_user_model()
COOKIE = settings.BREAKGLASS_SESSION_COOKIE


def _events(action: str):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _assert_admin_with_banner(client: Client, name: str) -> None:
    page = client.get("/admin/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="breakglass-banner"' in body
    assert f"account {name}" in body


def test_password_and_totp_work_with_no_idp_configured(make_account, client):
    assert not IdentityProvider.objects.exists()
    bg = make_account("bg-one")
    response = login(client, bg)
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    # A database session under its own cookie; the main (Redis) session cookie is untouched.
    assert COOKIE in response.cookies and response.cookies[COOKIE]["samesite"] == "Strict"
    assert settings.SESSION_COOKIE_NAME not in client.cookies
    stored = DbSessionStore(client.cookies[COOKIE].value)
    assert stored[sessions.MARKER] == "bg-one"
    assert stored[SESSION_KEY] == str(bg.account.user_id)
    _assert_admin_with_banner(client, "bg-one")
    used = _events("breakglass.used")
    assert len(used) == 1 and used[0].actor == "bg-one" and used[0].data["factor"] == "totp"


def test_works_while_every_configured_idp_is_dead(make_account, client):
    dead = _dead_url()
    with pytest.raises(requests.ConnectionError):
        requests.get(dead, timeout=2)
    saml = IdentityProvider.objects.create(slug="adfs", name="ADFS", protocol="saml",
                                           config={"metadata_url": f"{dead}/FederationMetadata.xml"})
    IdentityProvider.objects.create(slug="kc", name="Keycloak", protocol="oidc",
                                    config={"issuer": f"{dead}/realms/x", "client_id": "broker"})
    # SSO is down: no metadata can be fetched, no discovery document, no login.
    assert saml_metadata.refresh(saml, actor="test").error
    probe = Client(raise_request_exception=False)
    for slug in ("adfs", "kc"):
        assert probe.get(f"/sso/{slug}/login/").status_code >= 400
    bg = make_account("bg-one")
    assert login(client, bg).status_code == 302
    _assert_admin_with_banner(client, "bg-one")


def test_works_with_redis_down(make_account, redis_process, settings):
    bg = make_account("bg-one")
    settings.CACHES = redis_process.cache_settings()
    redis_process.stop()
    from redis.exceptions import ConnectionError as RedisConnectionError

    with pytest.raises(RedisConnectionError):
        cache.get("probe")
    client = Client()
    assert client.get(LOGIN).status_code == 200
    response = login(client, bg)
    assert response.status_code == 302, response.content.decode()[:500]
    _assert_admin_with_banner(client, "bg-one")
    assert _events("breakglass.used")


def test_password_alone_is_not_enough(make_account, client):
    bg = make_account("bg-one")
    first = client.post(LOGIN, {"username": bg.name, "password": bg.password})
    assert first.status_code == 302 and first["Location"] == VERIFY
    # Half-way: not logged in anywhere.
    assert client.get("/admin/").status_code == 302
    assert client.get(VERIFY).status_code == 200
    refused = client.post(VERIFY, {})
    assert refused.status_code == 403
    assert client.get("/admin/").status_code == 302
    failed = _events("breakglass.failed")
    assert failed[-1].reason == "no_second_factor"
    assert not _events("breakglass.used")
    # The second step without the first one is refused too.
    fresh = Client()
    assert fresh.post(VERIFY, {"otp": bg.code()}).status_code == 400


def test_wrong_totp_fails(make_account, client):
    bg = make_account("bg-one")
    good = bg.code()
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    response = login(client, bg, otp=wrong)
    assert response.status_code == 403
    assert "second factor was not accepted" in response.content.decode()
    assert client.get("/admin/").status_code == 302
    assert _events("breakglass.failed")[-1].reason == "bad_totp"


def test_wrong_password_fails_with_the_generic_message(make_account, client):
    bg = make_account("bg-one")
    response = login(client, bg, password="WRONG-PASSWORD")
    assert response.status_code == 403
    assert "Wrong account name or password." in response.content.decode()
    assert _events("breakglass.failed")[-1].reason == "bad_password"


def test_password_typing_is_forgiving(make_account, client):
    bg = make_account("bg-one")
    sloppy = bg.password.lower().replace("-", " ")
    assert login(client, bg, password=sloppy).status_code == 302


def test_federated_user_cannot_use_breakglass(make_idp, make_principal, session_request, make_account,
                                              client):
    make_account("bg-one")
    make_idp("corp")
    complete_login(session_request(), make_principal(subject="alice"))
    alice = FederatedIdentity.objects.get(subject="alice").user
    # Even a federated user who somehow got a password is refused: no break-glass account.
    alice.set_password("Correct-Horse-Battery-Staple-1")
    alice.save()
    wrong = Client().post(LOGIN, {"username": "bg-one", "password": "nope"})
    response = client.post(LOGIN, {"username": alice.username, "password": "Correct-Horse-Battery-Staple-1"})
    assert response.status_code == wrong.status_code == 403
    assert "Wrong account name or password." in response.content.decode()
    assert _events("breakglass.failed")[-1].reason == "not_breakglass"
    assert _events("breakglass.failed")[-1].data["account"] == alice.username
    unknown = client.post(LOGIN, {"username": "nobody", "password": "x"})
    assert unknown.status_code == 403
    assert _events("breakglass.failed")[-1].reason == "unknown_account"


def test_breakglass_user_cannot_use_sso(make_idp, make_principal, session_request, make_account):
    bg = make_account("bg-one")
    idp = make_idp("corp")
    # An admin mistakenly links the break-glass user to an IdP subject: SSO still refuses it.
    FederatedIdentity.objects.create(idp=idp, subject="bg-subject", user=bg.account.user)
    with pytest.raises(LoginError) as refused:
        complete_login(session_request(), make_principal(subject="bg-subject"))
    assert refused.value.code == "account_not_federated"
    # A principal whose subject equals the account name gets its own, new user (JIT never
    # matches on names), and never the break-glass user.
    complete_login(session_request(), make_principal(subject="bg-one"))
    link = FederatedIdentity.objects.get(subject="bg-one")
    assert link.user_id != bg.account.user_id
    assert not link.user.has_usable_password()
    assert not BreakGlassAccount.objects.filter(user=link.user).exists()


def test_admin_password_login_is_refused_for_breakglass(make_account, client):
    bg = make_account("bg-one")
    # Whatever /admin/login/ does (a form, or a redirect to the IdP picker), it logs nobody in.
    client.post("/admin/login/?next=/admin/", {"username": bg.name, "password": bg.password})
    assert client.get("/admin/").status_code == 302
    # Any password-only authenticate() is vetoed for a break-glass account, and audited.
    assert authenticate(username=bg.name, password=bg.password) is None
    assert _events("breakglass.failed")[-1].reason == "wrong_entry_point"


def _session(client: Client) -> DbSessionStore:
    return DbSessionStore(client.cookies[COOKIE].value)


@pytest.mark.parametrize(("field", "age", "reason"), [
    (sessions.SEEN_AT, 901, "breakglass_idle_timeout"),
    (sessions.AUTH_AT, 43201, "breakglass_max_age"),
])
def test_session_expires(make_account, client, field, age, reason):
    assert settings.BREAKGLASS_SESSION_IDLE == 900 and settings.BREAKGLASS_SESSION_MAX == 43200
    bg = make_account("bg-one")
    login(client, bg)
    key = client.cookies[COOKIE].value
    store = _session(client)
    store[field] = int(time.time()) - age
    store.save()
    response = client.get("/admin/")
    assert response.status_code == 302  # to the admin login: anonymous again
    assert response.cookies[COOKIE].value == ""  # cookie deleted
    assert not DbSessionStore().exists(key)
    expired = _events("session.expired")[-1]
    assert expired.reason == reason and expired.actor == "bg-one"


def test_session_survives_within_limits(make_account, client):
    bg = make_account("bg-one")
    login(client, bg)
    store = _session(client)
    store[sessions.SEEN_AT] = int(time.time()) - 800
    store[sessions.AUTH_AT] = int(time.time()) - 40000
    store.save()
    assert client.get("/admin/").status_code == 200
    assert _session(client)[sessions.SEEN_AT] >= int(time.time()) - 5  # idle clock refreshed


def test_rotate_required_after_use(make_account, client):
    bg = make_account("bg-one")
    assert not BreakGlassAccount.objects.get(pk=bg.account.pk).rotate_required
    login(client, bg)
    account = BreakGlassAccount.objects.get(pk=bg.account.pk)
    assert account.rotate_required and account.last_used_at is not None


def test_logout_ends_the_breakglass_session(make_account, client):
    bg = make_account("bg-one")
    login(client, bg)
    key = client.cookies[COOKIE].value
    response = client.post("/breakglass/logout/")
    assert response.status_code == 302
    assert not DbSessionStore().exists(key)
    assert client.get("/admin/").status_code == 302
    assert [e.actor for e in _events("breakglass.logout")] == ["bg-one"]  # audited once


def test_admin_logout_ends_it_too(make_account, client):
    bg = make_account("bg-one")
    login(client, bg)
    key = client.cookies[COOKIE].value
    client.post("/admin/logout/")
    assert not DbSessionStore().exists(key)
    assert client.get("/admin/").status_code == 302
    logout = _events("breakglass.logout")
    assert len(logout) == 1 and logout[0].data["via"] == "/admin/logout/"


def test_password_change_in_admin_is_refused(make_account, client):
    bg = make_account("bg-one")
    login(client, bg)
    response = client.get("/admin/password_change/")
    assert response.status_code == 403
    assert "breakglass rotate" in response.content.decode()


def test_sso_paths_keep_the_main_session(make_account, client):
    bg = make_account("bg-one")
    login(client, bg)
    assert client.get("/sso/me/").status_code == 401  # break-glass is not an SSO principal


def test_drill_proves_the_factors_without_a_session(make_account, client, mailoutbox, settings):
    settings.BREAKGLASS_ALERT_EMAILS = ["security@example.com"]
    bg = make_account("bg-one")
    response = login(client, bg, drill=True)
    assert response.status_code == 200
    assert "Drill passed" in response.content.decode()
    assert client.get("/admin/").status_code == 302
    account = BreakGlassAccount.objects.get(pk=bg.account.pk)
    assert account.last_tested_at is not None and account.last_used_at is None
    assert account.rotate_required
    assert _events("breakglass.tested") and not _events("breakglass.used")
    assert len(mailoutbox) == 1 and "[DRILL]" in mailoutbox[0].subject


def test_disabled_account_is_refused_and_its_sessions_end(make_account, client):
    from django.core.management import call_command

    bg = make_account("bg-one")
    login(client, bg)
    assert client.get("/admin/").status_code == 200
    call_command("breakglass", "disable", "bg-one")
    assert client.get("/admin/").status_code == 302
    response = login(Client(), bg)
    assert response.status_code == 403
    assert "disabled" in response.content.decode()
    call_command("breakglass", "enable", "bg-one")
    assert login(Client(), bg).status_code == 302


def test_flow_passes_csrf_checks(make_account):
    bg = make_account("bg-one")
    client = Client(enforce_csrf_checks=True)
    client.get(LOGIN)
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    assert client.post(LOGIN, {"username": bg.name, "password": bg.password}).status_code == 403  # no token
    first = client.post(LOGIN, {"username": bg.name, "password": bg.password, "csrfmiddlewaretoken": token})
    assert first.status_code == 302
    client.get(VERIFY)
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    done = client.post(VERIFY, {"otp": bg.code(), "csrfmiddlewaretoken": token})
    assert done.status_code == 302 and done["Location"] == "/admin/"


def test_login_cleans_up_expired_sessions_and_old_throttle_rows(make_account, client):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from broker.models import BreakGlassThrottle

    Session.objects.create(session_key="x" * 32, session_data="", expire_date=timezone.now() - timedelta(1))
    BreakGlassThrottle.objects.create(scope="account", key="old-guess", failures=4,
                                      last_failure_at=timezone.now() - timedelta(days=2))
    bg = make_account("bg-one")
    login(client, bg)
    assert not Session.objects.filter(session_key="x" * 32).exists()
    assert not BreakGlassThrottle.objects.filter(key="old-guess").exists()
    assert Session.objects.count() == 1
