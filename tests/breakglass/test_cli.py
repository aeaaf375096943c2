"""manage.py breakglass create|list|rotate|enroll|disable|enable."""

from __future__ import annotations

import io
import json
import math

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore as DbSessionStore
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from broker.breakglass import accounts
from broker.models import AuditEvent, BreakGlassAccount, FederatedIdentity
from tests.breakglass.conftest import Created, parse_secrets

pytestmark = pytest.mark.django_db
User = get_user_model()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("breakglass", *args, stdout=out)
    return out.getvalue()


def test_create_shows_secrets_once_and_audits_none(make_account):
    bg = make_account("bg-one", "--email", "ops@example.com")
    user = User.objects.get(username="bg-one")
    assert user.has_usable_password() and user.is_superuser and user.is_staff
    assert user.email == "ops@example.com"
    assert not FederatedIdentity.objects.filter(user=user).exists()
    # >= 128 bits from `secrets`, in the printed password.
    symbols = bg.password.replace("-", "")
    assert len(symbols) == accounts.PASSWORD_SYMBOLS
    assert set(symbols) <= set(accounts.ALPHABET)
    assert len(symbols) * math.log2(len(accounts.ALPHABET)) >= 128
    assert accounts.PASSWORD_BITS >= 128
    assert user.check_password(accounts.normalize_password(bg.password))
    # TOTP enrolled; the printed secret and URI are the device's.
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed
    assert bg.totp_secret in parse_secrets(bg.stdout)["totp_uri"]
    assert parse_secrets(bg.stdout)["totp_uri"].startswith("otpauth://totp/")
    assert "/breakglass/enroll/" in bg.enroll_url
    # Audited, without any secret value.
    created = AuditEvent.objects.get(action="breakglass.created")
    assert created.actor.startswith("cli:") and created.data["account"] == "bg-one"
    dump = json.dumps(list(AuditEvent.objects.values("data")), default=str)
    secret_part = bg.enroll_url.rstrip("/").rsplit("/", 1)[-1]
    for secret in (bg.password, accounts.normalize_password(bg.password), bg.totp_secret, secret_part):
        assert secret not in dump
    assert AuditEvent.objects.filter(action="breakglass.enrollment_issued").exists()


def test_create_refuses_an_existing_user(make_idp, make_principal, session_request, db):
    from broker.login import complete_login

    make_idp("corp")
    complete_login(session_request(), make_principal(subject="alice"))
    sso_user = FederatedIdentity.objects.get(subject="alice").user
    with pytest.raises(CommandError) as refused:
        run("create", sso_user.username)
    assert refused.value.returncode == 2
    with pytest.raises(CommandError):
        run("create", sso_user.username.upper())
    with pytest.raises(CommandError):
        run("create", "bad name!")
    assert not BreakGlassAccount.objects.exists()


def test_list_shows_use_rotation_and_factors(make_account):
    make_account("bg-one")
    make_account("bg-two", "--no-webauthn")
    text = run("list")
    assert "NAME" in text and "ROTATE" in text and "FACTORS" in text
    assert "bg-one" in text and "bg-two" in text and "totp" in text
    rows = json.loads(run("list", "--json"))
    assert [r["name"] for r in rows] == ["bg-one", "bg-two"]
    assert rows[0]["factors"] == {"totp": True, "webauthn": 0}
    assert rows[0]["rotate_required"] is False and rows[0]["enabled"] is True


def test_rotate_clears_the_flag_and_replaces_both_secrets(make_account):
    from tests.breakglass.conftest import login

    bg = make_account("bg-one")
    client = Client()
    assert login(client, bg).status_code == 302
    session_key = client.cookies[settings.BREAKGLASS_SESSION_COOKIE].value
    assert "DUE" in run("list")
    out = run("rotate", "bg-one")
    fresh = parse_secrets(out)
    assert fresh["password"] != bg.password and fresh["totp_secret"] != bg.totp_secret
    account = accounts.get_account("bg-one")
    assert not account.rotate_required and account.rotated_at is not None
    assert "DUE" not in run("list")
    # The running session ended; the old password no longer works; the new credentials do.
    assert not DbSessionStore().exists(session_key)
    assert login(Client(), bg).status_code == 403
    rotated = Created(account, fresh["password"], fresh["totp_secret"], "", out)
    assert login(Client(), rotated).status_code == 302
    event = AuditEvent.objects.get(action="breakglass.rotated")
    assert event.data["was_required"] is True and event.data["sessions_ended"] == 1


def test_disable_enable_and_enroll_are_audited(make_account):
    make_account("bg-one")
    assert "disabled" in run("disable", "bg-one")
    assert "already disabled" in run("disable", "bg-one")
    assert json.loads(run("list", "--json"))[0]["enabled"] is False
    assert "enabled" in run("enable", "bg-one")
    assert "/breakglass/enroll/" in run("enroll", "bg-one")
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions.count("breakglass.disabled") == 1 and actions.count("breakglass.enabled") == 1
    assert actions.count("breakglass.enrollment_issued") == 2
    with pytest.raises(CommandError) as missing:
        run("disable", "nobody")
    assert missing.value.returncode == 2
