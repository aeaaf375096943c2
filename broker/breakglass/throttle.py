"""Growing delays after failed break-glass attempts, per account name and per client IP.

Never a lock-out: after ``BREAKGLASS_THROTTLE_FREE_ATTEMPTS`` failures each further failure
doubles the wait (``BASE_DELAY`` * 2^n, capped at ``MAX_DELAY``); once the wait has passed a
correct login always works. Failures older than ``BREAKGLASS_THROTTLE_WINDOW`` are forgotten.

State lives in PostgreSQL (not Redis) so the emergency path works with Redis down. The rows
are locked (``SELECT ... FOR UPDATE``) for the duration of one attempt, so parallel guesses
against the same account or from the same IP are serialized and each sees the delay the
previous one earned. The delay is enforced by refusing early attempts, never by sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from broker.models import BreakGlassThrottle

Scope = BreakGlassThrottle.Scope


def now() -> datetime:
    """The clock (tests move it forward instead of sleeping)."""
    return timezone.now()


def delay_after(failures: int) -> int:
    """Seconds to wait after ``failures`` consecutive failures."""
    free = max(settings.BREAKGLASS_THROTTLE_FREE_ATTEMPTS, 0)
    if failures < free or failures <= 0:
        return 0
    exponent = min(failures - free, 30)
    return int(min(settings.BREAKGLASS_THROTTLE_BASE_DELAY * 2**exponent,
                   settings.BREAKGLASS_THROTTLE_MAX_DELAY))


def account_key(username: str) -> str:
    return (username or "").strip().lower()[:255]


@dataclass
class Attempt:
    """The locked throttle rows for one attempt. Use inside ``transaction.atomic()``."""

    rows: list[BreakGlassThrottle]

    def wait_seconds(self) -> int:
        """Seconds until an attempt is allowed (0: allowed now)."""
        current = now()
        waits = [
            math.ceil((row.next_allowed_at - current).total_seconds())
            for row in self.rows
            if row.next_allowed_at is not None and row.next_allowed_at > current
        ]
        return max(waits, default=0)

    def failed(self) -> None:
        current = now()
        window = timedelta(seconds=settings.BREAKGLASS_THROTTLE_WINDOW)
        for row in self.rows:
            if row.last_failure_at is not None and current - row.last_failure_at > window:
                row.failures = 0
            row.failures += 1
            row.last_failure_at = current
            row.next_allowed_at = current + timedelta(seconds=delay_after(row.failures))
            row.save(update_fields=["failures", "last_failure_at", "next_allowed_at"])

    def succeeded(self) -> None:
        for row in self.rows:
            if row.failures or row.next_allowed_at is not None:
                row.failures = 0
                row.next_allowed_at = None
                row.save(update_fields=["failures", "next_allowed_at"])


def acquire(username: str, ip: str | None) -> Attempt:
    """Lock (creating if needed) the account and IP rows. Must run inside a transaction."""
    wanted = [(Scope.ACCOUNT, account_key(username)), (Scope.IP, (ip or "unknown")[:255])]
    BreakGlassThrottle.objects.bulk_create(
        [BreakGlassThrottle(scope=s, key=k) for s, k in wanted], ignore_conflicts=True
    )
    rows = []
    # A fixed lock order (account, then IP) so two attempts cannot deadlock.
    for scope, key in wanted:
        rows.append(BreakGlassThrottle.objects.select_for_update().get(scope=scope, key=key))
    return Attempt(rows)


def prune() -> int:
    """Forget rows with no recent failure (guessed names would otherwise pile up)."""
    cutoff = now() - timedelta(seconds=settings.BREAKGLASS_THROTTLE_WINDOW)
    deleted, _ = BreakGlassThrottle.objects.filter(last_failure_at__lt=cutoff).delete()
    BreakGlassThrottle.objects.filter(last_failure_at__isnull=True, failures=0).delete()
    return deleted
