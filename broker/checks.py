"""System checks for misconfiguration (``manage.py check`` / ``check --deploy``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security)
def fail_closed(app_configs, **kwargs):
    """Redis errors must surface, or a lost replay/state cache would let logins through."""
    problems = []
    if getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False):
        problems.append(Error("DJANGO_REDIS_IGNORE_EXCEPTIONS must be False (fail closed).",
                              id="broker.E001"))
    for alias, conf in settings.CACHES.items():
        if conf.get("OPTIONS", {}).get("IGNORE_EXCEPTIONS"):
            problems.append(Error(f"CACHES[{alias!r}] ignores exceptions; the broker must fail "
                                  "closed when Redis is down.", id="broker.E002"))
    return problems


@register(Tags.security, deploy=True)
def production_backends(app_configs, **kwargs):
    problems = []
    if urlsplit(settings.BASE_URL).scheme != "https":
        problems.append(Warning("BASE_URL is not https: IdPs will post assertions in clear text.",
                                id="broker.W001"))
    if not settings.REDIS_URL:
        problems.append(Warning(
            "REDIS_URL is unset: sessions and login state are per-process (local memory), so "
            "several workers or nodes cannot share them.", id="broker.W002"))
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        problems.append(Warning("The database is not PostgreSQL: the audit log's append-only "
                                "guarantees need PostgreSQL.", id="broker.W003"))
    return problems


@register(Tags.security, deploy=True)
def breakglass_accounts(app_configs, **kwargs):
    """Emergency-access guidance: at least two enabled break-glass accounts, each proven to
    work (used or drilled) within BREAKGLASS_TEST_INTERVAL_DAYS, with alerts configured."""
    from datetime import timedelta

    from django.db import DatabaseError
    from django.utils import timezone

    problems = []
    try:
        from broker.breakglass.accounts import last_activity
        from broker.models import BreakGlassAccount

        enabled = list(BreakGlassAccount.objects.select_related("user")
                       .filter(disabled=False, user__is_active=True))
        key_counts = {a.pk: a.keys.count() for a in enabled}
    except DatabaseError:
        return []  # not migrated yet (or no database): nothing to judge
    if len(enabled) < 2:
        problems.append(Warning(
            f"{len(enabled)} enabled break-glass account(s): keep at least two, so losing one "
            "credential does not lock administrators out when the IdPs are down.",
            hint="manage.py breakglass create NAME", id="broker.W020"))
    limit = timezone.now() - timedelta(days=settings.BREAKGLASS_TEST_INTERVAL_DAYS)
    for account in enabled:
        if last_activity(account) < limit:
            problems.append(Warning(
                f"Break-glass account {account.name!r} has not been used or tested for "
                f"{settings.BREAKGLASS_TEST_INTERVAL_DAYS} days.",
                hint="Run a drill at /breakglass/ (\"Drill only\"), then `breakglass rotate`.",
                id="broker.W021"))
        if not key_counts[account.pk]:
            problems.append(Warning(
                f"Break-glass account {account.name!r} has no security key (only the TOTP fallback).",
                hint=f"manage.py breakglass enroll {account.name}", id="broker.W022"))
    if enabled and not (settings.BREAKGLASS_ALERT_EMAILS or settings.BREAKGLASS_ALERT_WEBHOOK):
        problems.append(Warning(
            "No break-glass alert channel: set BREAKGLASS_ALERT_EMAILS and/or BREAKGLASS_ALERT_WEBHOOK.",
            id="broker.W023"))
    return problems
