"""The sealer: gives committed events their place in the hash chain.

``record()`` inserts an event inside the caller's transaction with ``seq``, ``prev_hash`` and
``hash`` empty and takes no lock, so logins stay concurrent and the event commits (or rolls
back) with the action. After the commit, ``seal()`` chains every committed unsealed event:

* under the chain lock (a PostgreSQL advisory transaction lock; a process lock on SQLite) it
  gives them seq = head + 1, + 2, ... in id order, with ``prev_hash``/``hash`` linked, in one
  UPDATE; so the chain follows commit order, has no gaps (a rolled-back event never gets a seq)
  and cannot fork (one sealer at a time; ``seq`` is also UNIQUE);
* *optimistic* (the background leader, ``background``): read and hash with no lock held, then
  one pipelined round trip BEGIN / lock / guarded UPDATE / COMMIT, applied only if the head has
  not moved; the lock is held for the UPDATE alone, never across a client round trip;
* *pessimistic* (after a commit in a quiet process, ``audit seal``, export, verify): lock, read,
  hash, UPDATE; pipelined when outside a transaction (one client wake-up under the lock).

A failed or skipped seal only delays: the next seal anywhere takes every unsealed event.
``stats()`` reports the critical section (how long the lock is held), timed by the server
(lock acquired -> UPDATE done) and by the client.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction

from .canonical import GENESIS, event_hash
from .rows import ROW_FIELDS, row_body

CHAIN_LOCK = 0x62726F6B61756401  # pg advisory lock key ("brokaud" + 1)
BATCH = 5000  # events sealed per transaction at most (keeps the critical section short)
SLACK = 10_000
SWEEP_SECONDS = 10.0
_local_lock = threading.Lock()  # SQLite: one sealer per process (SQLite serializes writers anyway)
_last_sweep = 0.0


@dataclass
class SealResult:
    busy: bool = False  # wait=False and another sealer held the lock: nothing done
    sealed: int = 0
    first_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS
    lock_wait: float = 0.0  # seconds waiting for the chain lock
    critical: float = 0.0  # seconds from "lock held" to "commit acknowledged", client side
    server_critical: float | None = None  # lock acquired -> UPDATE done, server clock


class _Stats:
    """Per-process sealing statistics (the bench and ``audit seal`` print them)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seals = self.sealed = 0
        self.wait_total = 0.0
        self.client: deque[float] = deque(maxlen=100_000)
        self.server: deque[float] = deque(maxlen=100_000)

    def add(self, result: SealResult) -> None:
        self.seals += 1
        self.sealed += result.sealed
        self.wait_total += result.lock_wait
        self.client.append(result.critical)
        if result.server_critical is not None:
            self.server.append(result.server_critical)

    def summary(self) -> dict[str, Any]:
        return {"seals": self.seals, "sealed": self.sealed, "critical_ms": percentiles(self.client),
                "server_critical_ms": percentiles(self.server),
                "lock_wait_mean_ms": 1000 * self.wait_total / self.seals if self.seals else 0.0}


def percentiles(samples) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}

    def pct(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {"n": len(ordered), "mean": 1000 * sum(ordered) / len(ordered), "p50": pct(0.5), "p99": pct(0.99),
            "max": 1000 * ordered[-1]}


_stats = _Stats()


def stats() -> dict[str, Any]:
    return _stats.summary()


def reset_stats() -> None:
    _stats.reset()


def raw_samples() -> dict[str, list[float]]:
    return {"client": list(_stats.client), "server": list(_stats.server)}


# --- writing -------------------------------------------------------------------------------------

_INSERT_FIELDS = ROW_FIELDS[1:]


def insert_event(event, using: str = "default") -> None:
    """INSERT one unsealed event: what ``Model.save()`` does without its per-call overhead (this
    runs for every login). Sets ``event.pk``."""
    connection = connections[using]
    meta = type(event)._meta
    params = [meta.get_field(name).get_db_prep_save(getattr(event, name), connection)
              for name in _INSERT_FIELDS]
    sql = (f"INSERT INTO {meta.db_table} ({', '.join(_INSERT_FIELDS)}) "  # noqa: S608 (constant names)
           f"VALUES ({', '.join(['%s'] * len(_INSERT_FIELDS))}) RETURNING id")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        event.pk = cursor.fetchone()[0]
    event._state.adding, event._state.db = False, using


def schedule_seal(using: str = "default") -> None:
    """Seal once the current transaction commits (now, in autocommit mode). Once per transaction."""
    from .background import after_commit

    connection = connections[using]
    if connection.in_atomic_block and any(getattr(func, "audit_seal", None) == using
                                          for _, func, _ in connection.run_on_commit):
        return
    callback = functools.partial(after_commit, using)
    callback.audit_seal = using  # type: ignore[attr-defined]
    transaction.on_commit(callback, using=using, robust=True)


# --- sealing ---------------------------------------------------------------------------------------

_COLUMNS = ", ".join(ROW_FIELDS)
# The unsealed rows and the head in one statement. Unsealed rows are found through the partial
# index, from just below the head's id: the index also holds the dead (pre-seal) versions of
# sealed rows until VACUUM, and starting the range scan there skips them. A row older than that
# (a transaction open for longer than SLACK ids) is found by the periodic sweep (whole index).
_PENDING_SQL = (
    "WITH h AS (SELECT id, seq, hash FROM broker_auditevent WHERE seq IS NOT NULL "  # noqa: S608 (constants)
    "ORDER BY seq DESC LIMIT 1) "
    f"SELECT {', '.join('u.' + c for c in ROW_FIELDS)}, (SELECT seq FROM h), (SELECT hash FROM h) "
    f"FROM (SELECT {_COLUMNS} FROM broker_auditevent WHERE seq IS NULL "
    "AND id > COALESCE((SELECT id FROM h), 0) - %s ORDER BY id LIMIT %s) AS u ORDER BY u.id"
)
# Asynchronous commit for the seal only: the events are durable already, and a checkpoint's own
# (synchronous) commit flushes every seal before the checkpoint is published.
_LOCK_SQL = "SELECT set_config('synchronous_commit', 'off', true), {lock}(%s), clock_timestamp()"
_UPDATE_SQL = (
    "WITH u AS (UPDATE broker_auditevent AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS v(id, seq, prev_hash, hash) "
    "WHERE e.id = v.id RETURNING 1) SELECT count(*), clock_timestamp() FROM u"
)


# Optimistic sealing: hashes computed with no lock held, applied under the lock only if nobody
# sealed in between (the head is still the one they were chained to); all rows or none.
_GUARDED_UPDATE_SQL = (
    "WITH u AS (UPDATE broker_auditevent AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS v(id, seq, prev_hash, hash) "
    "WHERE e.id = v.id AND e.seq IS NULL AND COALESCE((SELECT seq FROM broker_auditevent "
    "WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1), 0) = %s RETURNING 1) "
    "SELECT count(*), clock_timestamp() FROM u"
)
OPTIMISTIC_TRIES = 3


def _head(using: str) -> tuple[int, str]:
    from broker.models import AuditEvent

    head = (AuditEvent.objects.using(using).filter(seq__isnull=False).order_by("-seq")
            .values_list("seq", "hash").first())
    return (head[0], head[1]) if head else (0, GENESIS)


def _parse_pending(fetched: list[tuple]) -> tuple[list[dict[str, Any]], int, str]:
    if not fetched:
        return [], 0, GENESIS
    head = fetched[0][len(ROW_FIELDS):]
    return ([dict(zip(ROW_FIELDS, r[:len(ROW_FIELDS)], strict=True)) for r in fetched],
            head[0] or 0, head[1] or GENESIS)


def _link(rows: list[dict[str, Any]], seq: int, prev: str) -> list[tuple[int, int, str, str]]:
    """(id, seq, prev_hash, hash) for each row, in order, after head (seq, prev)."""
    out = []
    for row in rows:
        seq += 1
        digest = event_hash(row_body(row, seq), prev)
        out.append((row["id"], seq, prev, digest))
        prev = digest
    return out


def _arrays(updates: list[tuple[int, int, str, str]]) -> list[list[Any]]:
    return [list(column) for column in zip(*updates, strict=True)]


def _seal_optimistic(using: str, limit: int, slack: int) -> SealResult | None:
    """PostgreSQL, autocommit: read and hash with no lock, then one pipelined round trip
    (BEGIN, lock, guarded UPDATE, COMMIT): the lock is held for the UPDATE alone, never across
    a client round trip. None: another sealer moved the head first (nothing written)."""
    connection = connections[using]
    connection.ensure_connection()
    raw = connection.connection
    start = time.perf_counter()
    with raw.cursor() as cursor:
        cursor.execute(_PENDING_SQL, [slack, limit])
        rows, seq, prev = _parse_pending(cursor.fetchall())
    if not rows:
        return SealResult(head_seq=seq, head_hash=prev)
    updates = _link(rows, seq, prev)
    try:
        with raw.pipeline(), raw.cursor() as tx_cur, raw.cursor() as lock_cur, raw.cursor() as write_cur:
            tx_cur.execute("BEGIN")
            lock_cur.execute(_LOCK_SQL.format(lock="pg_advisory_xact_lock"), [CHAIN_LOCK])
            write_cur.execute(_GUARDED_UPDATE_SQL, [*_arrays(updates), seq])
            tx_cur.execute("COMMIT")
            server_locked = lock_cur.fetchone()[2]
            count, server_done = write_cur.fetchone()
    except BaseException:
        with contextlib.suppress(Exception):
            raw.execute("ROLLBACK")
        raise
    done = time.perf_counter()
    if count == 0:
        return None
    if count != len(updates):
        raise RuntimeError(f"audit: sealed {count} of {len(updates)} rows")
    result = SealResult(sealed=count, first_seq=updates[0][1], head_seq=updates[-1][1],
                        head_hash=updates[-1][3], lock_wait=done - start, critical=done - start,
                        server_critical=(server_done - server_locked).total_seconds())
    _stats.add(result)
    return result


def _seal_pipelined(using: str, limit: int, wait: bool, slack: int) -> SealResult:
    """PostgreSQL in autocommit mode: BEGIN+lock+read in one round trip, UPDATE+COMMIT in another."""
    connection = connections[using]
    connection.ensure_connection()
    raw = connection.connection
    result = SealResult()
    start = time.perf_counter()
    lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    updates: list[tuple[int, int, str, str]] = []
    try:
        with raw.pipeline(), raw.cursor() as lock_cur, raw.cursor() as read_cur, raw.cursor() as write_cur:
            lock_cur.execute("BEGIN")
            lock_cur.execute(_LOCK_SQL.format(lock=lock), [CHAIN_LOCK])
            read_cur.execute(_PENDING_SQL, [slack, limit])
            _, acquired, server_locked = lock_cur.fetchone()
            locked = time.perf_counter()
            if acquired is False:  # pg_try_advisory_xact_lock; the blocking lock returns void
                lock_cur.execute("ROLLBACK")
                return SealResult(busy=True)
            rows, seq, prev = _parse_pending(read_cur.fetchall())
            updates = _link(rows, seq, prev)
            if updates:
                write_cur.execute(_UPDATE_SQL, _arrays(updates))
            lock_cur.execute("COMMIT")
            if updates:
                count, server_done = write_cur.fetchone()
                if count != len(updates):  # cannot happen under the lock; never report a false head
                    raise RuntimeError(f"audit: sealed {count} of {len(updates)} rows")
                result.server_critical = (server_done - server_locked).total_seconds()
    except BaseException:
        with contextlib.suppress(Exception):
            raw.execute("ROLLBACK")
        raise
    result.lock_wait, result.critical = locked - start, time.perf_counter() - locked
    if updates:
        result.sealed, result.first_seq = len(updates), updates[0][1]
        result.head_seq, result.head_hash = updates[-1][1], updates[-1][3]
    _stats.add(result)
    return result


def _seal_django(using: str, limit: int, wait: bool, slack: int) -> SealResult:
    """Inside a caller's transaction (a savepoint), or SQLite: plain Django cursor calls."""
    from broker.models import AuditEvent

    connection = connections[using]
    result = SealResult()
    start = time.perf_counter()
    local = connection.vendor != "postgresql"
    if local and not _local_lock.acquire(blocking=wait):
        return SealResult(busy=True)
    try:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            if not local:
                lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
                cursor.execute(_LOCK_SQL.format(lock=lock), [CHAIN_LOCK])
                if cursor.fetchone()[1] is False:
                    return SealResult(busy=True)
            locked = time.perf_counter()
            if local:
                rows = list(AuditEvent.objects.using(using).filter(seq__isnull=True).order_by("id")
                            .values(*ROW_FIELDS)[:limit])
                seq, prev = _head(using)
            else:
                cursor.execute(_PENDING_SQL, [slack, limit])
                rows, seq, prev = _parse_pending(cursor.fetchall())
            updates = _link(rows, seq, prev)
            if updates and local:
                cursor.executemany("UPDATE broker_auditevent SET seq = %s, prev_hash = %s, hash = %s "
                                   "WHERE id = %s", [(s, p, h, i) for i, s, p, h in updates])
            elif updates:
                cursor.execute(_UPDATE_SQL, _arrays(updates))
    finally:
        if local:
            _local_lock.release()
    result.lock_wait, result.critical = locked - start, time.perf_counter() - locked
    if updates:
        result.sealed, result.first_seq = len(updates), updates[0][1]
        result.head_seq, result.head_hash = updates[-1][1], updates[-1][3]
    _stats.add(result)
    return result


def seal(using: str = "default", *, batch: int = BATCH, wait: bool = True, sweep: bool = True,
         optimistic: bool = False) -> SealResult:
    """Seal every committed unsealed event (in batches); returns the totals and the new head.

    ``wait=False``: give up (``busy``) when another sealer holds the chain lock or, optimistic,
    moved the head first. ``sweep=False`` (after a commit): look only near the head, except
    every SWEEP_SECONDS. ``optimistic``: hash outside the lock (PostgreSQL, autocommit), falling
    back to the locked read after OPTIMISTIC_TRIES conflicts.
    """
    global _last_sweep
    if sweep or time.monotonic() - _last_sweep >= SWEEP_SECONDS:
        sweep, _last_sweep = True, time.monotonic()
    slack = 2**62 if sweep else SLACK
    connection = connections[using]
    pipelined = connection.vendor == "postgresql" and not connection.in_atomic_block
    total, conflicts = SealResult(), 0
    while True:
        if pipelined and optimistic and conflicts < OPTIMISTIC_TRIES:
            result = _seal_optimistic(using, batch, slack)
            if result is None:
                conflicts += 1
                if not wait:
                    total.busy = True
                    return total
                continue
        else:
            result = (_seal_pipelined if pipelined else _seal_django)(using, batch, wait, slack)
        if result.busy:
            total.busy = True
            return total
        total.lock_wait += result.lock_wait
        total.critical = max(total.critical, result.critical)
        if result.sealed:
            total.first_seq = total.first_seq or result.first_seq
            total.sealed += result.sealed
            total.head_seq, total.head_hash = result.head_seq, result.head_hash
        if result.sealed < batch:
            break
    if not total.sealed:
        total.head_seq, total.head_hash = _head(using)
    return total


def unsealed_count(using: str = "default") -> int:
    from broker.models import AuditEvent

    return AuditEvent.objects.using(using).filter(seq__isnull=True).count()
