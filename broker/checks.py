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
