"""`check --deploy`: at least two enabled break-glass accounts, each used/tested in 90 days."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone

from broker import checks
from broker.models import BreakGlassAccount, BreakGlassSecurityKey


def _ids() -> list[str]:
    return sorted(w.id for w in checks.breakglass_accounts(None))


def _add_key(account: BreakGlassAccount) -> None:
    BreakGlassSecurityKey.objects.create(account=account, credential_id=b"k" * 16,
                                         credential_id_b64=f"k-{account.pk}", public_key=b"pk")


@pytest.mark.django_db
def test_warns_below_two_enabled_accounts(make_account, settings):
    settings.BREAKGLASS_ALERT_WEBHOOK = "https://alerts.example/hook"
    assert "broker.W020" in _ids()
    one = make_account("bg-one")
    _add_key(one.account)
    assert _ids() == ["broker.W020"]
    two = make_account("bg-two")
    _add_key(two.account)
    assert _ids() == []
    BreakGlassAccount.objects.filter(pk=two.account.pk).update(disabled=True)
    assert _ids() == ["broker.W020"]


@pytest.mark.django_db
def test_warns_when_not_used_or_tested_for_90_days(make_account, settings):
    settings.BREAKGLASS_ALERT_EMAILS = ["security@example.com"]
    accounts = [make_account(name).account for name in ("bg-one", "bg-two")]
    for account in accounts:
        _add_key(account)
    old = timezone.now() - timedelta(days=91)
    BreakGlassAccount.objects.filter(pk=accounts[0].pk).update(created_at=old)
    warnings = checks.breakglass_accounts(None)
    assert [w.id for w in warnings] == ["broker.W021"] and "bg-one" in warnings[0].msg
    # A drill within the period clears it, and so does a use.
    BreakGlassAccount.objects.filter(pk=accounts[0].pk).update(
        last_tested_at=timezone.now() - timedelta(days=10))
    assert _ids() == []
    BreakGlassAccount.objects.filter(pk=accounts[0].pk).update(
        last_tested_at=old, last_used_at=timezone.now())
    assert _ids() == []


@pytest.mark.django_db
def test_warns_without_security_key_or_alert_channel(make_account, settings):
    settings.BREAKGLASS_ALERT_EMAILS = []
    settings.BREAKGLASS_ALERT_WEBHOOK = ""
    make_account("bg-one")
    make_account("bg-two")
    assert _ids() == ["broker.W022", "broker.W022", "broker.W023"]


def test_database_not_migrated_is_tolerated(monkeypatch):
    def broken(*args, **kwargs):
        raise DatabaseError('relation "broker_breakglassaccount" does not exist')

    monkeypatch.setattr(BreakGlassAccount.objects, "select_related", broken)
    assert checks.breakglass_accounts(None) == []
