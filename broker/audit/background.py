"""Who seals after a commit, so that no request waits on the chain and seals stay few and large.

* Quiet process (no sealer thread running): the committing thread tries the chain lock and
  seals right away (deterministic for the CLI and tests). Lock busy: wake the thread.
* Otherwise, and always in a serving process (``serve_in_background()``, called by the
  gunicorn configuration's ``post_worker_init``), the committing thread only wakes this
  process's sealer thread: no database work after the commit, so a login's response does
  not wait on the chain.
* The sealer thread tries to become *the* sealer of the cluster (a session advisory lock, one
  holder across every process and node). The leader seals in a loop, every ``POLL`` seconds
  while events keep coming, with optimistic hashing (``chain.seal(optimistic=True)``): the chain
  lock is held only for the UPDATE. After ``IDLE`` seconds without events it steps down and
  seals once more *after* releasing leadership.
* A thread that fails to become leader has nothing to do: the leader was active after its
  commit, and either seals it in its loop or in its final seal after stepping down. So no
  commit is left behind while some process is alive; a crash only delays (``audit seal``,
  or the next commit anywhere, takes it).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from django.db import connections

logger = logging.getLogger("broker.audit")
LEADER_LOCK = 0x62726F6B61756403
POLL = 0.05  # leader: pause between seals while events arrive (batches of a few events under load)
IDLE = 2.0  # leader: step down (and close the connection) after this long without events
RETRY = 0.05  # non-leader: at most one leadership attempt per this interval


_served = [False]


def serve_in_background() -> None:
    """This process serves requests: seal in the sealer thread only, never in a request."""
    _served[0] = True


def after_commit(using: str = "default") -> None:
    """The ``on_commit`` callback of ``record()`` (robust: a failure is logged, never raised)."""
    from . import checkpoints
    from .chain import seal

    if _served[0] or _sealer.active():
        _sealer.wake(using)
        return
    try:
        result = seal(using, wait=False, sweep=False)
    except Exception:
        logger.exception("audit: sealing after commit failed; the sealer thread retries")
        result = None
    if result is None or result.busy:
        _sealer.wake(using)
    elif result.sealed:
        checkpoints.maybe_checkpoint(result, using=using)


class _Sealer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.thread: threading.Thread | None = None
        self.wanted: set[str] = set()
        self.pending = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.stopping = False
        self.last_active = 0.0
        self.atexit = False

    def active(self) -> bool:
        """The thread ran recently in this process (it covers new commits by itself)."""
        return (self.pid == os.getpid() and self.thread is not None and self.thread.is_alive()
                and (not self.idle.is_set() or time.monotonic() - self.last_active < IDLE))

    def wake(self, using: str) -> None:
        with self.lock:
            if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
                # First use in this process (or after a fork): fresh state and thread.
                self.pid, self.wanted, self.stopping = os.getpid(), set(), False
                self.pending, self.idle = threading.Event(), threading.Event()
                self.thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
                self.thread.start()
                if not self.atexit:
                    atexit.register(self.stop)
                    self.atexit = True
            self.wanted.add(using)
            self.last_active = time.monotonic()
            self.idle.clear()
            self.pending.set()

    def _run(self) -> None:
        while not self.stopping:
            if not self.pending.wait(timeout=IDLE):
                connections.close_all()  # idle: hold no connection (test teardown, poolers)
                continue
            with self.lock:
                self.pending.clear()
                wanted, self.wanted = self.wanted, set()
            for using in wanted:
                try:
                    if self._try_lead(using):
                        self._lead(using)
                except Exception:
                    logger.exception("audit: background sealing failed; retrying")
                    connections[using].close()
                    with self.lock:
                        self.wanted.add(using)
                    time.sleep(1.0)
                    self.pending.set()
            time.sleep(RETRY)  # coalesce the next wake-ups into one attempt
            with self.lock:
                if not self.pending.is_set():
                    self.idle.set()

    @staticmethod
    def _try_lead(using: str) -> bool:
        connection = connections[using]
        if connection.vendor != "postgresql":
            return True  # one process (embedded mode): this thread seals
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK])
            return bool(cursor.fetchone()[0])

    def _lead(self, using: str) -> None:
        from . import checkpoints
        from .chain import seal

        connection = connections[using]
        quiet_since = time.monotonic()
        try:
            while not self.stopping and time.monotonic() - quiet_since < IDLE:
                result = seal(using, sweep=False, optimistic=True)
                if result.sealed:
                    quiet_since = self.last_active = time.monotonic()
                    checkpoints.maybe_checkpoint(result, using=using)
                time.sleep(POLL)
        finally:
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LEADER_LOCK])
        # Commits whose threads saw this process as leader: seal them after stepping down.
        result = seal(using, sweep=False)
        if result.sealed:
            checkpoints.maybe_checkpoint(result, using=using)

    def stop(self, timeout: float = 10.0) -> None:
        """At exit: the leader steps down (sealing what is left); work not yet taken is sealed here."""
        if self.thread is None or self.pid != os.getpid() or not self.thread.is_alive():
            return
        from .chain import seal

        self.stopping = True
        self.pending.set()
        self.thread.join(timeout)
        with self.lock:
            leftover, self.wanted = self.wanted, set()
        for using in leftover:
            try:
                seal(using)
            except Exception:
                logger.exception("audit: sealing at exit failed; `manage.py audit seal` takes it")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the thread has handled what it was woken for (tests, the bench)."""
        if self.thread is None or self.pid != os.getpid() or not self.thread.is_alive():
            return True
        return self.idle.wait(timeout)


_sealer = _Sealer()


def flush(timeout: float = 10.0) -> bool:
    return _sealer.flush(timeout)
