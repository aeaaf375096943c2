"""Export the audit log for auditors: streamed, each event with its seq and hashes, plus a signed
manifest. Memory stays flat (server-side cursor, one line at a time).

The exported range is contiguous in seq: from the first sealed event at or after ``since`` to
the last one before ``until`` (an event committed late may carry a time just outside the
window; it is included rather than leaving a hole in the chain). ``action``/``actor``/``idp``
filters then pick events inside that range; the manifest's signed digest of every exported
(seq, hash) still shows a dropped or reordered line.

JSONL: one canonical-JSON event per line, the manifest as the last line (``{"manifest": ...}``).
CSV: a header, one event per row (``data`` as canonical JSON), the manifest in
``FILE.manifest.json``. Every export is audited (``audit.exported``) before any data leaves.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from . import checkpoints, signing
from .canonical import GENESIS, HASH_ALGORITHM, LINE_FIELDS, canonical_json, format_time
from .chain import seal
from .offline import EXPORT_FORMAT, csv_row, manifest_statement, sidecar
from .rows import iter_sealed

FORMATS = ("jsonl", "csv")


def parse_when(value: str | None) -> dt.datetime | None:
    """An ISO date or date-time (``2024-05-01``, ``2024-05-01T12:00:00Z``); no zone means UTC."""
    from django.utils.dateparse import parse_date, parse_datetime

    if not value:
        return None
    try:
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = dt.datetime.combine(day, dt.time())
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
FLUSH_BYTES = 256 * 1024


class ExportError(Exception):
    """The export cannot be made: bad request (status 400) or no signing key (503)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Filters:
    since: dt.datetime
    until: dt.datetime
    action: str = ""
    actor: str = ""
    idp: str = ""

    @property
    def contiguous(self) -> bool:
        return not (self.action or self.actor or self.idp)

    def lookups(self) -> dict[str, str]:
        return {k: v for k, v in (("action", self.action), ("actor", self.actor), ("idp", self.idp)) if v}

    def as_dict(self) -> dict[str, Any]:
        return {"since": format_time(self.since), "until": format_time(self.until), "action": self.action,
                "actor": self.actor, "idp": self.idp}


@dataclass
class Export:
    """A prepared export: audited, range fixed, covering checkpoint made. Iterate ``chunks()``."""

    filters: Filters
    fmt: str
    first_seq: int | None
    last_seq: int | None
    export_id: str
    actor: str
    key: Any
    fingerprint: str
    checkpoint: dict[str, Any] | None
    checkpoints: list[dict[str, Any]]
    chain: str
    using: str = "default"
    manifest: dict[str, Any] = field(default_factory=dict)

    def _lines(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        if self.first_seq is None:
            return
        for row in iter_sealed(self.using, first=self.first_seq, last=self.last_seq,
                               **self.filters.lookups()):
            event = row
            if self.fmt == "jsonl":
                yield event, canonical_json(event) + b"\n"
            else:
                yield event, b""

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, in chunks; builds ``self.manifest`` at the end."""
        from .canonical import ExportDigest

        digest, count, first, last = ExportDigest(), 0, None, None
        buf = io.BytesIO()
        text = io.TextIOWrapper(buf, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text, lineterminator="\n")
        if self.fmt == "csv":
            writer.writerow(LINE_FIELDS)
        with transaction.atomic(using=self.using):  # a plain (not WITH HOLD) server-side cursor
            for event, line in self._lines():
                if self.fmt == "csv":
                    writer.writerow(csv_row(event))
                else:
                    buf.write(line)
                digest.add(event["seq"], event["hash"])
                count += 1
                if first is None:
                    first = {"seq": event["seq"], "prev_hash": event["prev_hash"], "hash": event["hash"]}
                last = {"seq": event["seq"], "hash": event["hash"]}
                if buf.tell() >= FLUSH_BYTES:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        self.manifest = self._manifest(count, first, last, digest.hexdigest())
        if self.fmt == "jsonl":
            buf.write(canonical_json({"manifest": self.manifest}) + b"\n")
        if buf.tell():
            yield buf.getvalue()
        text.detach()

    def _manifest(self, count: int, first, last, digest: str) -> dict[str, Any]:
        manifest = {
            "format": EXPORT_FORMAT, "file_format": self.fmt, "hash_algorithm": HASH_ALGORITHM,
            "export_id": self.export_id, "exported_at": format_time(timezone.now()),
            "exported_by": self.actor,
            "filters": self.filters.as_dict(), "contiguous": self.filters.contiguous,
            "range": {"first_seq": self.first_seq, "last_seq": self.last_seq},
            "count": count, "first": first, "last": last, "digest": digest, "chain": self.chain,
            "checkpoint": self.checkpoint, "checkpoints": self.checkpoints,
            "public_key_fingerprint": self.fingerprint,
        }
        manifest["signature"] = signing.sign(self.key, manifest_statement(manifest))
        return manifest


def prepare(filters: Filters, fmt: str, *, actor: str, destination: str, using: str = "default") -> Export:
    """Seal, fix the range, make sure a checkpoint covers it, audit the export. No data yet."""
    from broker import audit
    from broker.models import AuditEvent
    from broker.models.audit import AuditCheckpoint

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    if filters.until <= filters.since:
        raise ExportError("--until must be after --since")
    try:
        key = signing.load_private(checkpoints.key_file())
    except signing.SigningKeyError as exc:
        raise ExportError(f"cannot sign the export: {exc}", status=503) from None
    seal(using)
    sealed = AuditEvent.objects.using(using).filter(seq__isnull=False)
    first = sealed.filter(time__gte=filters.since).aggregate(s=Min("seq"))["s"]
    last = sealed.filter(time__lt=filters.until).aggregate(s=Max("seq"))["s"]
    if first is None or last is None or first > last:
        first = last = None
    covering = None
    if last is not None:
        covering = AuditCheckpoint.objects.using(using).filter(seq__gte=last).order_by("seq", "id").first()
        if covering is None:
            covering = checkpoints.create("export", using=using)
            checkpoints.publish(covering)
    in_range = []
    if first is not None:
        in_range = [checkpoints.as_line(cp) for cp in AuditCheckpoint.objects.using(using)
                    .filter(seq__gte=first, seq__lte=last).order_by("seq", "id")]
    chain = AuditEvent.objects.using(using).filter(seq=1).values_list("hash", flat=True).first() or GENESIS
    export = Export(
        filters=filters, fmt=fmt, first_seq=first, last_seq=last, export_id=str(uuid.uuid4()), actor=actor,
        key=key, fingerprint=signing.fingerprint(key.public_key()),
        checkpoint=checkpoints.as_line(covering) if covering else None, checkpoints=in_range, chain=chain,
        using=using,
    )
    audit.record("audit.exported", actor=actor, export_id=export.export_id, format=fmt,
                 destination=destination, filters=filters.as_dict(),
                 range={"first_seq": first, "last_seq": last})
    return export


def write(export: Export, path: Path) -> dict[str, Any]:
    """Write the export to ``path`` (0600; CSV also ``path.manifest.json``); returns the manifest."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for chunk in export.chunks():
            fh.write(chunk)
    if export.fmt == "csv":
        fd = os.open(sidecar(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(canonical_json({"manifest": export.manifest}) + b"\n")
    return export.manifest
