"""Where a SAML login's time goes: logins run one after another in this process, through
Django's full request handling, with the login path's steps timed (wall clock).

Used by bench/login_throughput.py after its HTTP run; the numbers are per login.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable

# (module, function, label): the steps of a login, in the order they run.
STEPS = [
    ("broker.idp_cache", "get", "IdP lookup (cached; one Redis read)"),
    ("broker.loginstate", "take", "pending login: take (Redis GETDEL)"),
    ("broker.protocols.saml.acs", "verify_response", "SAML verification (schema, pysaml2, xmlsec)"),
    ("broker.protocols.saml.acs", "_check_replay", "assertion replay check (Redis SET NX)"),
    ("broker.identity", "resolve_user", "identity: (idp, subject) -> user (SQL)"),
    ("broker.rbac", "sync_roles", "roles: sync (SQL)"),
    ("broker.audit", "record", "audit event insert (SQL)"),
    ("broker.login", "django_login", "Django login (new session key)"),
    ("broker.sessions", "register", "session registry (Redis pipeline)"),
]


def _timed(totals: dict[str, float], label: str, func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start
    return wrapper


def breakdown(post: Callable[[int], None], count: int) -> tuple[float, float, list[tuple[str, float]]]:
    """Call ``post(i)`` (one complete login) ``count`` times; return (wall ms per login, CPU ms
    per login, [(step, ms per login)]) with "session write + commit" and "request handling" as
    what is left inside and outside ``complete_login``."""
    import importlib

    totals: dict[str, float] = defaultdict(float)
    patched = []
    for module_name, name, label in [*STEPS, ("broker.saml_views", "complete_login", "_complete")]:
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        patched.append((module, name, original))
        setattr(module, name, _timed(totals, label, original))
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            post(i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        for module, name, original in patched:
            setattr(module, name, original)
    inside = ("identity", "roles", "audit", "Django login", "session registry")
    in_login = sum(v for k, v in totals.items() if k.startswith(inside))
    steps = [(label, totals[label] * 1000 / count) for _, _, label in STEPS]
    steps.append(("session write, transaction commit, rest of login",
                  (totals["_complete"] - in_login) * 1000 / count))
    steps.append(("request handling (WSGI, middleware, parsing the POST)",
                  (wall - sum(v for k, v in totals.items() if not k.startswith(inside))) * 1000 / count))
    return wall * 1000 / count, cpu * 1000 / count, steps
