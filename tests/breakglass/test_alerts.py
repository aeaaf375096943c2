"""Every break-glass use is audited and alerted (e-mail and webhook); a failed alert is
logged and audited but never blocks the emergency login."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from broker.models import AuditEvent
from tests.breakglass.conftest import WebhookReceiver, login

pytestmark = pytest.mark.django_db


def test_every_use_is_audited_and_alerted(make_account, mailoutbox, webhook, settings):
    settings.BREAKGLASS_ALERT_EMAILS = ["security@example.com", "oncall@example.com"]
    settings.BREAKGLASS_ALERT_WEBHOOK = webhook.url
    bg = make_account("bg-one")
    for n in range(2):
        assert login(Client(), bg, REMOTE_ADDR="192.0.2.10").status_code == 302
        used = AuditEvent.objects.filter(action="breakglass.used")
        assert used.count() == n + 1
        assert len(mailoutbox) == n + 1
        assert len(webhook.received) == n + 1
    mail = mailoutbox[-1]
    assert mail.to == ["security@example.com", "oncall@example.com"]
    assert "[BREAK-GLASS]" in mail.subject and "bg-one" in mail.subject
    assert "breakglass disable bg-one" in mail.body
    hook = webhook.received[-1]
    assert hook["event"] == "breakglass.used"
    assert hook["account"] == "bg-one"
    assert hook["source_ip"] == "192.0.2.10"
    assert hook["factor"] == "totp"
    event = used.last()
    assert event.source_ip == "192.0.2.10" and event.actor == "bg-one"
    # No secret anywhere: not in the alert, the mail or the audit trail.
    everything = json.dumps(webhook.received) + mail.body + json.dumps(
        list(AuditEvent.objects.values("data", "reason", "actor")), default=str)
    for secret in (bg.password, bg.password.replace("-", ""), bg.totp_secret):
        assert secret not in everything
    assert not AuditEvent.objects.filter(action="breakglass.alert_failed").exists()


def test_failed_alerts_do_not_block_the_login(make_account, mailoutbox, settings):
    dead = WebhookReceiver(status=500)
    settings.BREAKGLASS_ALERT_WEBHOOK = dead.url
    settings.BREAKGLASS_ALERT_EMAILS = ["security@example.com"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    try:
        bg = make_account("bg-one")
        client = Client()
        assert login(client, bg).status_code == 302
        assert client.get("/admin/").status_code == 200
    finally:
        dead.close()
    failures = AuditEvent.objects.filter(action="breakglass.alert_failed")
    assert set(failures.values_list("reason", flat=True)) == {"email", "webhook"}
    assert failures.get(reason="webhook").data["error"] == "RuntimeError"
    assert all(f.outcome == "failure" and f.actor == "bg-one" for f in failures)
    assert AuditEvent.objects.filter(action="breakglass.used").count() == 1


def test_no_alert_channel_is_audited(make_account, settings):
    settings.BREAKGLASS_ALERT_EMAILS = []
    settings.BREAKGLASS_ALERT_WEBHOOK = ""
    bg = make_account("bg-one")
    assert login(Client(), bg).status_code == 302
    assert AuditEvent.objects.get(action="breakglass.alert_failed").reason == "no_channel"
