"""Alerts on every break-glass use: e-mail (BREAKGLASS_ALERT_EMAILS) and/or a webhook
(BREAKGLASS_ALERT_WEBHOOK, a JSON POST).

An alert that cannot be delivered is logged and audited (``breakglass.alert_failed``) but
never blocks the emergency login. The payload carries no secret.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import DatabaseError
from django.utils import timezone

from broker import audit, context
from broker.models import BreakGlassAccount

logger = logging.getLogger("broker.breakglass.alerts")


def payload(event: str, account: BreakGlassAccount, **extra: Any) -> dict[str, Any]:
    ctx = context.current()
    return {
        "event": event,
        "account": account.name,
        "time": timezone.now().isoformat(),
        "source_ip": ctx.source_ip,
        "request_id": ctx.request_id,
        "broker": settings.BASE_URL,
        "rotate_required": True,
        **extra,
    }


def _email(data: dict[str, Any]) -> None:
    drill = data["event"] == "breakglass.tested"
    subject = (f"[{'DRILL' if drill else 'BREAK-GLASS'}] account {data['account']} "
               f"{'tested' if drill else 'used'} on {settings.BASE_URL}")
    body = "\n".join([
        f"The break-glass account {data['account']} was {'tested (drill)' if drill else 'used'}.",
        "",
        *(f"{k}: {v}" for k, v in data.items()),
        "",
        "If this was not expected, disable it now: manage.py breakglass disable "
        f"{data['account']}",
        f"Afterwards rotate its credentials: manage.py breakglass rotate {data['account']}",
    ])
    send_mail(subject, body, None, list(settings.BREAKGLASS_ALERT_EMAILS), fail_silently=False)


def _webhook(data: dict[str, Any]) -> None:
    response = requests.post(settings.BREAKGLASS_ALERT_WEBHOOK, json=data,
                             timeout=settings.BREAKGLASS_ALERT_TIMEOUT, allow_redirects=False)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"HTTP {response.status_code}")


def notify(event: str, account: BreakGlassAccount, **extra: Any) -> list[str]:
    """Send the alert on every configured channel; returns the channels that failed."""
    data = payload(event, account, **extra)
    channels = []
    if settings.BREAKGLASS_ALERT_EMAILS:
        channels.append(("email", _email))
    if settings.BREAKGLASS_ALERT_WEBHOOK:
        channels.append(("webhook", _webhook))
    failed: list[tuple[str, str]] = []
    if not channels:
        failed.append(("no_channel", "neither BREAKGLASS_ALERT_EMAILS nor BREAKGLASS_ALERT_WEBHOOK is set"))
    for name, send in channels:
        try:
            send(data)
        except Exception as exc:  # noqa: BLE001 - any delivery failure is reported, never raised
            # The exception text may echo the webhook URL (a secret): keep only its type.
            failed.append((name, type(exc).__name__ if name == "webhook" else str(exc)[:200]))
    for name, error in failed:
        logger.error("break-glass alert %s for %s failed via %s: %s", event, account.name, name, error)
        try:
            audit.record("breakglass.alert_failed", outcome="failure", actor=account.name,
                         reason=name, alert_event=event, error=error)
        except DatabaseError:
            logger.exception("could not audit breakglass.alert_failed")
    return [name for name, _ in failed]
