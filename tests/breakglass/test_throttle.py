"""Guessing is throttled with growing delays per account and per IP, never a lock-out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from broker.breakglass import throttle
from broker.models import AuditEvent, BreakGlassThrottle
from tests.breakglass.conftest import LOGIN, login

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.value = timezone.now()

    def __call__(self):
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch, settings):
    settings.BREAKGLASS_THROTTLE_FREE_ATTEMPTS = 2
    settings.BREAKGLASS_THROTTLE_BASE_DELAY = 1
    settings.BREAKGLASS_THROTTLE_MAX_DELAY = 8
    fake = Clock()
    monkeypatch.setattr(throttle, "now", fake)
    return fake


def _wrong(client: Client, name: str, **extra):
    return client.post(LOGIN, {"username": name, "password": "WRONG"}, **extra)


def test_delay_schedule(settings):
    settings.BREAKGLASS_THROTTLE_FREE_ATTEMPTS = 3
    settings.BREAKGLASS_THROTTLE_BASE_DELAY = 2
    settings.BREAKGLASS_THROTTLE_MAX_DELAY = 300
    assert [throttle.delay_after(n) for n in range(0, 13)] == [
        0, 0, 0, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert throttle.delay_after(10_000) == 300  # capped: never a lock-out


def test_delays_grow_and_a_correct_login_works_after_the_wait(make_account, clock):
    bg = make_account("bg-one")
    client = Client()
    waits = []
    for _ in range(7):
        response = _wrong(client, bg.name)
        assert response.status_code == 403
        row = BreakGlassThrottle.objects.get(scope="account", key="bg-one")
        waits.append(round((row.next_allowed_at - clock()).total_seconds()))
        # Too early: refused with how long to wait, and the delay does not grow from that.
        if waits[-1]:
            early = login(client, bg)
            assert early.status_code == 429
            assert f"try again in {waits[-1]} s" in early.content.decode()
            assert BreakGlassThrottle.objects.get(pk=row.pk).failures == row.failures
        clock.advance(waits[-1])
    assert waits == [0, 1, 2, 4, 8, 8, 8]
    reasons = list(AuditEvent.objects.filter(action="breakglass.failed").values_list("reason", flat=True))
    assert reasons.count("bad_password") == 7 and reasons.count("throttled") == 6
    # Now the correct password and code work, and the counters reset.
    assert login(client, bg).status_code == 302
    assert BreakGlassThrottle.objects.get(scope="account", key="bg-one").failures == 0


def test_correct_credentials_are_refused_only_while_the_delay_runs(make_account, clock):
    bg = make_account("bg-one")
    client = Client()
    for _ in range(3):
        _wrong(client, bg.name)
    assert login(client, bg).status_code == 429
    clock.advance(1)
    assert login(client, bg).status_code == 302


def test_throttle_per_ip_covers_other_account_names(make_account, clock):
    bg = make_account("bg-one")
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    client = Client()
    for n in range(3):
        _wrong(client, f"guess-{n}", **attacker)  # a different name each time
    refused = login(client, bg, **attacker)
    assert refused.status_code == 429  # the IP earned a delay
    # The same account from another address is not delayed by the attacker's IP...
    assert login(Client(), bg, REMOTE_ADDR="198.51.100.7").status_code == 302


def test_throttle_per_account_covers_other_ips(make_account, clock):
    bg = make_account("bg-one")
    for n in range(3):
        _wrong(Client(), bg.name, REMOTE_ADDR=f"203.0.113.{n + 1}")
    assert login(Client(), bg, REMOTE_ADDR="198.51.100.7").status_code == 429
    clock.advance(1)
    assert login(Client(), bg, REMOTE_ADDR="198.51.100.7").status_code == 302


def test_wrong_second_factor_counts_too(make_account, clock):
    bg = make_account("bg-one")
    client = Client()
    for _ in range(3):
        assert login(client, bg, otp="000000").status_code == 403
        clock.advance(60)
    row = BreakGlassThrottle.objects.get(scope="account", key="bg-one")
    assert row.failures == 3 and row.next_allowed_at == clock() - timedelta(seconds=58)
    failed = AuditEvent.objects.filter(action="breakglass.failed")
    assert list(failed.values_list("reason", flat=True)) == ["bad_totp"] * 3


def test_old_failures_are_forgotten(make_account, clock, settings):
    settings.BREAKGLASS_THROTTLE_WINDOW = 3600
    bg = make_account("bg-one")
    client = Client()
    for _ in range(4):
        _wrong(client, bg.name)
        clock.advance(10)
    clock.advance(3601)
    _wrong(client, bg.name)
    assert BreakGlassThrottle.objects.get(scope="account", key="bg-one").failures == 1
