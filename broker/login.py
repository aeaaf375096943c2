"""complete_login(): the one place where identity, roles, audit and the session meet.

Protocol adapters verify and hand over a ``Principal``; everything after that is
protocol-blind and lives here.
"""

from __future__ import annotations

import logging
import time

from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.contrib.auth import login as django_login
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone

from broker import audit, context, identity, idp_cache, rbac, sessions
from broker.errors import LoginError
from broker.middleware import SESSION_AUTH_AT, SESSION_SEEN_AT
from broker.models import IdentityProvider
from broker.principal import Principal
from broker.redirects import safe_next

logger = logging.getLogger("broker.login")

# Session keys a successful login writes; /sso/me/ and forward-auth read them, so the hot
# path needs no database query.
SESSION_IDP = "broker_idp"
SESSION_SUBJECT = "broker_subject"
SESSION_ROLES = "broker_roles"
SESSION_EMAIL = "broker_email"
SESSION_INDEX = "broker_session_index"
SESSION_PROTOCOL = "broker_protocol"
SESSION_USERNAME = "broker_username"

BACKEND = "django.contrib.auth.backends.ModelBackend"

# "Last login" of an IdP is kept to the minute: see _idp_touch_due().
_IDP_TOUCH_INTERVAL = 60.0
_idp_touched: dict[int, float] = {}


def _idp_touch_due(idp: IdentityProvider) -> bool:
    """Should this login update the IdP's last_login_at? At most once a minute per cluster
    (a Redis SET NX) and, before even asking Redis, once a minute per process: every login
    writing one IdP row would serialize concurrent logins on its row lock."""
    now = time.monotonic()
    if now - _idp_touched.get(idp.pk, -_IDP_TOUCH_INTERVAL) < _IDP_TOUCH_INTERVAL:
        return False
    _idp_touched[idp.pk] = now
    return cache.add(f"idp-last-login:{idp.pk}", 1, timeout=int(_IDP_TOUCH_INTERVAL))


def _backend_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "our own storage is down": fail closed with a 503."""
    errors: list[type[BaseException]] = [DatabaseError]
    try:
        from redis.exceptions import RedisError

        errors.append(RedisError)
    except ImportError:  # pragma: no cover - redis is a hard dependency
        pass
    return tuple(errors)


BACKEND_ERRORS = _backend_errors()


def complete_login(
    request: HttpRequest, principal: Principal, next_url: str | None = None,
    session_data: dict | None = None, idp: IdentityProvider | None = None,
) -> HttpResponse:
    """Resolve identity, sync roles, audit, start a fresh session, redirect safely.

    ``session_data`` is what the protocol adapter needs later (SAML NameID for single
    logout, OIDC ID token hint), stored in the new session. Raises ``LoginError``; the
    caller renders it with ``login_failed``.
    """
    try:
        if idp is None or idp.slug != principal.idp:
            idp = idp_cache.get(principal.idp)
        if idp is None:
            raise LoginError("idp_unknown")
        if not idp.enabled:
            raise LoginError("idp_disabled")
        with transaction.atomic():
            user, held = identity.resolve_user(principal, idp)
            grants = rbac.roles_for(principal.idp, principal.attributes, rbac.current_rules(idp))
            change = rbac.sync_roles(user, grants.keys(), held)
            if _idp_touch_due(idp):
                IdentityProvider.objects.filter(pk=idp.pk).update(last_login_at=timezone.now())
            audit.record(
                "login.succeeded",
                actor=user.get_username(),
                idp=principal.idp,
                subject=principal.subject,
                protocol=principal.protocol,
                roles=change.roles,
                roles_granted=change.granted,
                roles_revoked=change.revoked,
                rules={role: [r.id for r in rules] for role, rules in grants.items()},
                authn_context=principal.authn_context,
            )
            # Inside the transaction: if the session store (Redis) fails, nothing is kept.
            if AUTH_SESSION_KEY in request.session:
                # Django keeps the key when the session already belongs to this user: rotate
                # it anyway, so the write below is a SET NX of a key the browser does not hold.
                request.session.cycle_key()
            django_login(request, user, backend=BACKEND)  # rotates the session key
            now = int(time.time())
            request.session.update({
                SESSION_IDP: principal.idp,
                SESSION_SUBJECT: principal.subject,
                SESSION_ROLES: change.roles,
                SESSION_EMAIL: principal.email or "",
                SESSION_INDEX: principal.session_index or "",
                SESSION_AUTH_AT: now,
                SESSION_SEEN_AT: now,
                SESSION_PROTOCOL: principal.protocol,
                SESSION_USERNAME: user.get_username(),
                **{f"broker_{k}": v for k, v in (session_data or {}).items()},
            })
            # Written once, here, inside the transaction (broker.session_store: the new key
            # was not written by cycle_key, and the middleware's save only sets the cookie).
            request.session.save()
            sessions.register(
                request.session.session_key, idp=principal.idp, subject=principal.subject,
                sid=principal.session_index or "", user_id=user.pk,
            )
    except BACKEND_ERRORS as exc:
        logger.error("login storage failure: %s", type(exc).__name__)
        # Nothing of the half-done login reaches the session store at the end of the response
        # (the browser's previous session, if any, was already rotated away: logged out).
        request.session.modified = False
        raise LoginError("backend_unavailable", type(exc).__name__) from exc
    context.set_actor(user.get_username())
    return HttpResponseRedirect(safe_next(next_url))


def login_failed(
    request: HttpRequest, error: LoginError, *, idp: str = "", subject: str = ""
) -> HttpResponse:
    """Audit ``login.failed`` with the error's code and render the error page."""
    try:
        audit.record(
            "login.failed", outcome="failure", idp=idp, subject=subject,
            reason=error.code, detail=error.detail[:500],
        )
    except BACKEND_ERRORS as exc:
        # The page still tells the user what happened; the log keeps the trace for ops.
        logger.error("could not audit login.failed (%s): %s", error.code, type(exc).__name__)
    logger.warning("login failed idp=%s code=%s", idp or "-", error.code)
    return render_error(request, error)


def render_error(request: HttpRequest, error: LoginError) -> HttpResponse:
    return render(
        request,
        "broker/error.html",
        {
            "code": error.code,
            "title": error.info.title,
            "hint": error.info.hint,
            "request_id": getattr(request, "request_id", ""),
        },
        status=error.status,
    )
