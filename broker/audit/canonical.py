"""The canonical form of an audit event and its chain hash. Pure: no Django, no database.

The offline verifier (``broker.audit.offline``) uses exactly these functions, so an auditor's
copy of this module is all it takes to recompute a hash.

* canonical JSON: keys sorted, separators ``,`` and ``:`` (no spaces), UTF-8 (non-ASCII
  characters as themselves), no NaN/Infinity;
* time: ISO-8601 UTC with microseconds, ``2024-05-01T12:00:00.000000Z``;
* ``hash = SHA-256(canonical JSON of the event || prev_hash)``, lower-case hex, where the
  event is the fields in ``EVENT_FIELDS`` (seq included, so position is part of the hash)
  and ``prev_hash`` is the previous event's hash as 64 ASCII hex digits (``GENESIS`` for
  seq 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

HASH_ALGORITHM = "sha256(canonical-json(event) || prev_hash)"
GENESIS = "0" * 64
EVENT_FIELDS = (
    "id", "seq", "time", "action", "outcome", "actor", "source_ip", "request_id", "idp",
    "subject", "reason", "data",
)
# An exported line: the event plus its links.
LINE_FIELDS = (*EVENT_FIELDS, "prev_hash", "hash")
_HEX = frozenset("0123456789abcdef")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def format_time(value: dt.datetime) -> str:
    """ISO-8601 UTC with microseconds; a naive datetime is taken as UTC (SQLite)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def event_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed part of an event (``row`` holds at least ``EVENT_FIELDS``; time a string)."""
    return {name: row[name] for name in EVENT_FIELDS}


def event_hash(body: Mapping[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical_json(body) + prev_hash.encode("ascii")).hexdigest()


def is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


CHECKPOINT_TYPE = "broker-audit-checkpoint/1"


def checkpoint_statement(*, chain: str, seq: int, head_hash: str, time: str, key: str) -> dict[str, Any]:
    """What a checkpoint signature covers (its canonical JSON)."""
    return {"type": CHECKPOINT_TYPE, "chain": chain, "seq": seq, "head_hash": head_hash, "time": time,
            "key": key}


def checkpoint_line_statement(line: Mapping[str, Any]) -> dict[str, Any]:
    """The signed statement of a checkpoint line (sink file, webhook, export manifest)."""
    return checkpoint_statement(chain=line["chain"], seq=line["seq"], head_hash=line["head_hash"],
                                time=line["time"], key=line["key"])


class ExportDigest:
    """SHA-256 over ``"<seq>:<hash>\\n"`` of every exported event, in file order.

    Signed in the manifest, so a filtered (non-contiguous) export still shows a dropped,
    added or reordered line.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, seq: int, hash_: str) -> None:
        self._h.update(f"{seq}:{hash_}\n".encode("ascii"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()
