"""The audit log's write path: ``record()`` is the only way an event is written.

Call it explicitly from every state change (no signals), inside the same transaction as
the change: if the audit insert fails the change rolls back with it ("no audit, no
action").
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from broker import context
from broker.redaction import redact

logger = logging.getLogger("broker.audit")


def record(
    action: str,
    *,
    outcome: str = "success",
    actor: str | None = None,
    idp: str = "",
    subject: str = "",
    reason: str = "",
    **data: Any,
):
    """Append one event. ``data`` is redacted of secrets before it is stored.

    Actor, source IP and request ID default to the current request or command context.
    """
    from broker.models import AuditEvent

    ctx = context.current()
    event = AuditEvent.objects.create(
        time=timezone.now(),
        action=action,
        outcome=outcome,
        actor=(actor if actor is not None else ctx.actor)[:300],
        source_ip=ctx.source_ip,
        request_id=ctx.request_id[:64],
        idp=idp or "",
        subject=(subject or "")[:512],
        reason=reason or "",
        data=redact(data),
    )
    logger.info(
        "audit %s outcome=%s actor=%s idp=%s reason=%s",
        action, outcome, event.actor, idp or "-", reason or "-",
    )
    return event
