"""Signed checkpoints: Ed25519 over (chain, last seq, head hash, time, key fingerprint).

Made every ``AUDIT_CHECKPOINT_EVERY`` sealed events, when events keep arriving
``AUDIT_CHECKPOINT_SECONDS`` after the last checkpoint, before an export, and on demand
(``audit checkpoint``, e.g. from cron). Each is stored in the database and appended to the
sink file outside it (and POSTed to the webhook when set); a sink or webhook failure is
logged, never fatal. Because the sink lives outside the database, deleting the tail of the
log or rolling the database back is visible to ``audit verify``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from . import signing
from .canonical import canonical_json, checkpoint_line_statement, checkpoint_statement, format_time

logger = logging.getLogger("broker.audit")

CHECKPOINT_LOCK = 0x62726F6B61756402
_local_lock = threading.Lock()
_next_time_check = 0.0
_key_warned_at = 0.0


def key_file() -> Path:
    return Path(settings.AUDIT_SIGNING_KEY_FILE)


def sink_path() -> Path:
    return Path(settings.AUDIT_CHECKPOINT_SINK)


def as_line(cp) -> dict[str, Any]:
    """A checkpoint as written to the sink, the webhook and export manifests."""
    statement = checkpoint_statement(chain=cp.chain, seq=cp.seq, head_hash=cp.head_hash,
                                     time=format_time(cp.time), key=cp.key_fingerprint)
    return {**statement, "signature": cp.signature, "id": cp.pk, "reason": cp.reason}


@dataclass
class Published:
    sink_error: str | None = None
    webhook_error: str | None = None


def create(reason: str = "manual", *, using: str = "default", only_if_new: bool = False):
    """Sign the current head and store it (then publish). None when there is nothing to sign.

    Raises ``signing.SigningKeyError`` when the key is missing or unusable.
    """
    from broker.models import AuditEvent
    from broker.models.audit import AuditCheckpoint

    from .chain import _head

    key = signing.load_private(key_file())
    fingerprint = signing.fingerprint(key.public_key())
    connection = connections[using]
    local = connection.vendor != "postgresql"
    if local:
        _local_lock.acquire()
    try:
        with transaction.atomic(using=using):
            if not local:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHECKPOINT_LOCK])
            head_seq, head_hash = _head(using)
            if head_seq == 0:
                return None
            if only_if_new:
                last = AuditCheckpoint.objects.using(using).order_by("-seq").values_list("seq").first()
                if last and last[0] >= head_seq:
                    return None
            chain = AuditEvent.objects.using(using).filter(seq=1).values_list("hash", flat=True).first()
            now = timezone.now()
            stmt = checkpoint_statement(chain=chain or "", seq=head_seq, head_hash=head_hash,
                                        time=format_time(now), key=fingerprint)
            cp = AuditCheckpoint.objects.using(using).create(
                chain=chain or "", seq=head_seq, head_hash=head_hash, time=now, key_fingerprint=fingerprint,
                signature=signing.sign(key, stmt), reason=reason,
            )
    finally:
        if local:
            _local_lock.release()
    return cp


def publish(cp, *, wait: bool = False) -> Published:
    """Append ``cp`` to the sink file and POST it to the webhook (in the background unless wait)."""
    out = Published()
    line = as_line(cp)
    try:
        append_to_sink(line)
    except OSError as exc:
        out.sink_error = f"{sink_path()}: {exc.strerror or exc}"
        logger.error("audit: checkpoint seq %s not written to the sink %s", cp.seq, out.sink_error)
    url = settings.AUDIT_CHECKPOINT_WEBHOOK
    if url:
        if wait:
            out.webhook_error = _post(url, line)
        else:
            threading.Thread(target=_post, args=(url, line), name="audit-webhook", daemon=True).start()
    return out


def _post(url: str, line: dict[str, Any]) -> str | None:
    import requests

    try:
        response = requests.post(url, data=canonical_json(line),
                                 timeout=settings.AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT,
                                 headers={"Content-Type": "application/json"})
        response.raise_for_status()
    except requests.RequestException as exc:
        logger.error("audit: checkpoint seq %s not delivered to the webhook: %s", line["seq"], exc)
        return str(exc)
    return None


def append_to_sink(line: dict[str, Any]) -> None:
    path = sink_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, canonical_json(line) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_sink(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(checkpoint lines, problems) of a sink file; a missing file is no checkpoints."""
    lines: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return lines, problems
    with fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
                checkpoint_line_statement(item)
                item["signature"]  # noqa: B018 (presence check)
            except (ValueError, KeyError, TypeError):
                problems.append(f"{path}:{number}: not a checkpoint line")
                continue
            lines.append(item)
    return lines, problems


def maybe_checkpoint(result, *, using: str = "default") -> None:
    """After a seal: checkpoint when the seal crossed a multiple of N, or T seconds passed."""
    global _next_time_check
    every, seconds = settings.AUDIT_CHECKPOINT_EVERY, settings.AUDIT_CHECKPOINT_SECONDS
    reason = None
    if every > 0 and result.first_seq and (result.first_seq - 1) // every != result.head_seq // every:
        reason = "events"
    elif seconds > 0 and time.monotonic() >= _next_time_check:
        _next_time_check = time.monotonic() + max(1.0, seconds / 10)
        if _last_checkpoint_age(using) >= seconds:
            reason = "time"
    if reason is None:
        return
    try:
        cp = create(reason, using=using, only_if_new=True)
    except signing.SigningKeyError as exc:
        _warn_no_key(exc)
        return
    if cp is not None:
        publish(cp)


def _last_checkpoint_age(using: str) -> float:
    from broker.models import AuditEvent
    from broker.models.audit import AuditCheckpoint

    last = AuditCheckpoint.objects.using(using).order_by("-id").values_list("time", flat=True).first()
    if last is None:
        last = AuditEvent.objects.using(using).filter(seq=1).values_list("time", flat=True).first()
    return (timezone.now() - last).total_seconds() if last else 0.0


def _warn_no_key(exc: Exception) -> None:
    global _key_warned_at
    if time.monotonic() - _key_warned_at > 3600 or not _key_warned_at:
        _key_warned_at = time.monotonic()
        logger.warning("audit: no checkpoint made: %s", exc)
