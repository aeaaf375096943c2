"""Reading events as the hash sees them, and streaming sealed events in seq order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db import connections

from .canonical import event_body, format_time

ROW_FIELDS = ("id", "time", "action", "outcome", "actor", "source_ip", "request_id", "idp", "subject",
              "reason", "data")
SEALED_FIELDS = (*ROW_FIELDS, "seq", "prev_hash", "hash")


def normalize(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the hash sees it: time as the canonical string, data parsed (raw SQL gives text)."""
    data = row["data"]
    return {**row, "time": format_time(row["time"]), "data": json.loads(data) if isinstance(data,
                                                                                            str) else data}


def row_body(row: dict[str, Any], seq: int) -> dict[str, Any]:
    """The hashed body of an unsealed row (``ROW_FIELDS``) placed at ``seq``."""
    return event_body({**normalize(row), "seq": seq})


def iter_sealed(using: str = "default", *, first: int | None = None, last: int | None = None,
                chunk: int = 5000, action: str = "", actor: str = "", idp: str = "") -> Iterator[dict[str,
                                                                                                      Any]]:
    """Sealed events in seq order, normalized (time string, data parsed), memory flat.

    PostgreSQL: a server-side cursor; call inside ``transaction.atomic()``, or the cursor is
    declared WITH HOLD and the server materializes the whole result first.
    """
    connection = connections[using]
    conditions = [("seq >= %s", first), ("seq <= %s", last), ("action = %s", action or None),
                  ("actor = %s", actor or None), ("idp = %s", idp or None)]
    where = " AND ".join(["seq IS NOT NULL", *(sql for sql, value in conditions if value is not None)])
    params = [value for _, value in conditions if value is not None]
    if connection.vendor == "postgresql":
        sql = f"SELECT {', '.join(SEALED_FIELDS)} FROM broker_auditevent WHERE {where} ORDER BY seq"  # noqa: S608
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(chunk):
                for values in rows:
                    row = dict(zip(SEALED_FIELDS, values, strict=True))
                    row["time"] = format_time(row["time"])
                    if isinstance(row["data"], str):
                        row["data"] = json.loads(row["data"])
                    yield row
        return
    from broker.models import AuditEvent

    lookups = {"seq__gte": first, "seq__lte": last, "action": action or None, "actor": actor or None,
               "idp": idp or None}
    qs = AuditEvent.objects.using(using).filter(seq__isnull=False, **{k: v for k, v in lookups.items()
                                                                      if v is not None})
    for row in qs.order_by("seq").values(*SEALED_FIELDS).iterator(chunk_size=chunk):
        yield normalize(row)
