"""The break-glass login: password, then a second factor (security key, or TOTP fallback).

Every step first takes the database throttle (per account name and per client IP); a
refused or failed step is audited as ``breakglass.failed`` with its reason, and the caller
gets one generic message for "no such account / not a break-glass account / wrong
password" so the page is no oracle. A success is ``breakglass.used`` (or
``breakglass.tested`` for a drill), marks the account ``rotate_required`` and alerts.
Nothing here touches Redis or an IdP.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import login as django_login
from django.db import DatabaseError, transaction
from django.http import HttpRequest
from django.utils import timezone

from broker import audit, context
from broker.breakglass import alerts, security_keys, sessions, throttle
from broker.breakglass.accounts import normalize_password, totp_device
from broker.models import BreakGlassAccount, FederatedIdentity

logger = logging.getLogger("broker.breakglass")

BACKEND = "django.contrib.auth.backends.ModelBackend"
GENERIC = "Wrong account name or password."
DISABLED = "This break-glass account is disabled (manage.py breakglass enable NAME)."
FACTOR_FAILED = "The second factor was not accepted."


class LoginRefused(Exception):
    def __init__(self, reason: str, message: str = GENERIC, *, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.status = status


class Throttled(LoginRefused):
    def __init__(self, wait: int) -> None:
        super().__init__("throttled", f"Too many failed attempts: try again in {wait} s.", status=429)
        self.wait = wait


@dataclass(frozen=True)
class Verified:
    account: BreakGlassAccount
    factor: str  # "webauthn" | "totp"


def _failed(username: str, reason: str, step: str) -> None:
    audit.record("breakglass.failed", outcome="failure", actor="", reason=reason,
                 account=(username or "")[:150], step=step)
    logger.warning("break-glass %s step refused: %s", step, reason)


def _dummy_hash(password: str) -> None:
    """Spend the time a real check would, so unknown names are not faster to reject."""
    get_user_model()().set_password(password)


def _check_password(username: str, password: str) -> tuple[BreakGlassAccount | None, str]:
    User = get_user_model()
    typed = normalize_password(password)
    user = User.objects.filter(username=username).first()
    if user is None:
        _dummy_hash(typed)
        return None, "unknown_account"
    account = BreakGlassAccount.objects.filter(user=user).select_related("user").first()
    if account is None:
        # Federated users (and any other local user) are refused like a wrong password.
        _dummy_hash(typed)
        return None, "not_breakglass"
    if not user.has_usable_password() or not user.check_password(typed):
        return None, "bad_password"
    if FederatedIdentity.objects.filter(user=user).exists():
        return None, "federated"
    if account.disabled or not user.is_active:
        return None, "disabled"
    return account, ""


def password_step(username: str, password: str, ip: str | None) -> BreakGlassAccount:
    """Check the password; raises ``Throttled`` / ``LoginRefused``."""
    refused: LoginRefused | None = None
    with transaction.atomic():
        attempt = throttle.acquire(username, ip)
        wait = attempt.wait_seconds()
        if wait:
            _failed(username, "throttled", "password")
            refused = Throttled(wait)
        else:
            account, reason = _check_password(username, password)
            if account is None:
                attempt.failed()
                _failed(username, reason, "password")
                message = DISABLED if reason == "disabled" else GENERIC
                refused = LoginRefused(reason, message)
    if refused is not None:
        raise refused
    return account


def second_factor_step(account_id: int, username: str, ip: str | None, *, otp: str = "",
                       assertion: str = "", challenge: bytes | None = None) -> Verified:
    """Check a security-key assertion (preferred) or a TOTP code for a password-checked login."""
    refused: LoginRefused | None = None
    verified: Verified | None = None
    with transaction.atomic():
        attempt = throttle.acquire(username, ip)
        wait = attempt.wait_seconds()
        account = BreakGlassAccount.objects.select_related("user").filter(pk=account_id).first()
        if wait:
            _failed(username, "throttled", "second_factor")
            refused = Throttled(wait)
        elif account is None or account.disabled or not account.user.is_active:
            _failed(username, "disabled", "second_factor")
            refused = LoginRefused("disabled", FACTOR_FAILED)
        else:
            reason = ""
            if assertion:
                try:
                    security_keys.verify_assertion(account, assertion, challenge or b"")
                    verified = Verified(account, "webauthn")
                except security_keys.SecurityKeyError as exc:
                    reason = "bad_security_key"
                    logger.info("security key refused: %s", exc)
            elif otp:
                device = totp_device(account.user)
                code = "".join(otp.split())
                if device is not None and code.isdigit() and device.verify_token(code):
                    verified = Verified(account, "totp")
                else:
                    reason = "bad_totp"
            else:
                reason = "no_second_factor"
            if verified is None:
                attempt.failed()
                _failed(username, reason, "second_factor")
                refused = LoginRefused(reason, FACTOR_FAILED)
            else:
                attempt.succeeded()
    if refused is not None:
        raise refused
    assert verified is not None
    return verified


def _mark_used(account: BreakGlassAccount, *, drill: bool) -> None:
    now = timezone.now()
    account.rotate_required = True
    fields = ["rotate_required"]
    if drill:
        account.last_tested_at = now
        fields.append("last_tested_at")
    else:
        account.last_used_at = now
        fields.append("last_used_at")
    account.save(update_fields=fields)


def finish_login(request: HttpRequest, verified: Verified) -> None:
    """Open the break-glass session (database), audit ``breakglass.used``, then alert."""
    account = verified.account
    name = account.name
    with transaction.atomic():
        account = BreakGlassAccount.objects.select_for_update().select_related("user").get(pk=account.pk)
        _mark_used(account, drill=False)
        audit.record("breakglass.used", actor=name, account=name, factor=verified.factor,
                     rotate_required=True)
        sessions.activate(request)
        request.session.pop(sessions.PENDING, None)
        django_login(request, account.user, backend=BACKEND)  # new session key
        now = int(time.time())
        request.session[sessions.MARKER] = name
        request.session[sessions.AUTH_AT] = now
        request.session[sessions.SEEN_AT] = now
        request.session.set_expiry(settings.BREAKGLASS_SESSION_MAX)
        request.session.save()
    context.set_actor(name)
    alerts.notify("breakglass.used", account, factor=verified.factor)
    _housekeeping()


def _housekeeping() -> None:
    """Old database sessions and throttle rows go (best effort, after the login)."""
    try:
        with transaction.atomic():
            sessions.delete_expired()
            throttle.prune()
    except DatabaseError:
        logger.warning("break-glass housekeeping failed", exc_info=True)


def finish_drill(request: HttpRequest, verified: Verified) -> None:
    """A drill proves both factors (and the alert path) without opening a session."""
    account = verified.account
    name = account.name
    with transaction.atomic():
        account = BreakGlassAccount.objects.select_for_update().select_related("user").get(pk=account.pk)
        _mark_used(account, drill=True)
        audit.record("breakglass.tested", actor=name, account=name, factor=verified.factor,
                     rotate_required=True)
        request.session.flush()
    alerts.notify("breakglass.tested", account, factor=verified.factor)
