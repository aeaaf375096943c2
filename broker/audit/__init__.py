"""The audit log's write path: ``record()`` is the only way an event is written.

Call it explicitly from every state change (no signals), inside the same transaction as
the change: if the audit insert fails the change rolls back with it ("no audit, no
action").

The insert takes no lock: the event joins the hash chain once the caller's transaction
commits (``chain.seal``, scheduled with ``on_commit``), so concurrent logins never wait for
each other on the audit log. The rest of the package, by role: ``canonical`` (hashing, no
Django), ``rows`` (reading events), ``chain`` (the sealer), ``background`` (who seals after a
commit), ``signing`` (the Ed25519 key), ``checkpoints``, ``export`` and ``views`` (exports),
``verify`` (the database), ``offline`` + ``walk`` + ``report`` (an export, no database, no
secret), ``setup`` (database roles, triggers, the auditor role).
"""

from __future__ import annotations

import logging
from typing import Any

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
    from django.utils import timezone

    from broker.models import AuditEvent

    from .chain import insert_event, schedule_seal

    ctx = context.current()
    event = AuditEvent(
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
    insert_event(event)
    schedule_seal()
    logger.info(
        "audit %s outcome=%s actor=%s idp=%s reason=%s",
        action, outcome, event.actor, idp or "-", reason or "-",
    )
    return event
