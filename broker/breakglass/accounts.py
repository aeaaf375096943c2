"""Managing break-glass accounts (the ``breakglass`` CLI calls these; each change audited).

Secrets (password, TOTP seed, enrolment link) are returned to the caller once, to be shown
once; they are never stored in clear, logged or audited.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from base64 import b32encode
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from broker import audit
from broker.breakglass import sessions
from broker.models import BreakGlassAccount, BreakGlassEnrollment, FederatedIdentity

# Crockford's base32: no I, L, O, U; case-insensitive when typed.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PASSWORD_SYMBOLS = 28  # 28 x 5 bits = 140 bits of entropy
PASSWORD_BITS = PASSWORD_SYMBOLS * 5
TOTP_DEVICE_NAME = "break-glass"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$")
_TYPO = str.maketrans({"I": "1", "L": "1", "O": "0"})


class BreakGlassError(Exception):
    """A refused request (bad name, unknown account, ...); nothing was changed."""


@dataclass(frozen=True)
class Secrets:
    """What the operator sees once: password, TOTP seed/URI, optional enrolment link."""

    password: str
    totp_secret: str
    totp_uri: str
    enroll_url: str = ""
    enroll_expires_at: datetime | None = None


def generate_password() -> str:
    """A random password of PASSWORD_BITS bits, grouped for reading aloud: XXXX-XXXX-..."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(PASSWORD_SYMBOLS))
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def normalize_password(typed: str) -> str:
    """What is hashed and checked: case, spaces and dashes do not matter, nor I/L/O vs 1/0."""
    return re.sub(r"[\s-]+", "", typed or "").upper().translate(_TYPO)


def get_account(name: str) -> BreakGlassAccount:
    account = BreakGlassAccount.objects.select_related("user").filter(user__username=name).first()
    if account is None:
        raise BreakGlassError(f"No break-glass account named {name!r} (see `breakglass list`).")
    return account


def _enroll_totp(user) -> TOTPDevice:
    TOTPDevice.objects.filter(user=user).delete()
    return TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=True)


def totp_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def _totp_secrets(device: TOTPDevice) -> tuple[str, str]:
    return b32encode(device.bin_key).decode().rstrip("="), device.config_url


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_enrollment(account: BreakGlassAccount, *, actor: str) -> tuple[str, datetime]:
    """A one-time link (BASE_URL/breakglass/enroll/<secret>/) to register a security key."""
    secret = secrets.token_urlsafe(32)
    expires = timezone.now() + timedelta(seconds=settings.BREAKGLASS_ENROLL_TTL)
    with transaction.atomic():
        # Earlier unused links stop working: only the newest one is valid.
        account.enrollments.filter(used_at__isnull=True).update(expires_at=timezone.now())
        BreakGlassEnrollment.objects.create(account=account, secret_hash=_hash(secret), expires_at=expires)
        audit.record("breakglass.enrollment_issued", actor=actor, account=account.name,
                     link_expires_at=expires.isoformat())
    return f"{settings.BASE_URL}/breakglass/enroll/{secret}/", expires


def find_enrollment(secret: str) -> BreakGlassEnrollment | None:
    """The enrolment for a link secret if it is unused, unexpired and its account enabled."""
    enrollment = (
        BreakGlassEnrollment.objects.select_related("account__user")
        .filter(secret_hash=_hash(secret or "")).first()
    )
    if (enrollment is None or enrollment.used_at is not None
            or enrollment.expires_at <= timezone.now() or enrollment.account.disabled):
        return None
    return enrollment


def create_account(name: str, *, email: str = "", actor: str, webauthn_link: bool = True,
                   ) -> tuple[BreakGlassAccount, Secrets]:
    """A new local superuser with a generated password and TOTP; optionally an enrolment link."""
    if not _NAME.match(name or ""):
        raise BreakGlassError("NAME must be 1-150 letters, digits or . _ @ + - (starting with a letter "
                              "or digit).")
    User = get_user_model()
    if User.objects.filter(username__iexact=name).exists():
        # Never turn an existing (possibly federated) user into a break-glass account.
        raise BreakGlassError(f"A user named {name!r} already exists; choose another name.")
    password = generate_password()
    with transaction.atomic():
        user = User.objects.create_user(username=name, email=email, password=normalize_password(password),
                                        is_staff=True, is_superuser=True)
        now = timezone.now()
        account = BreakGlassAccount.objects.create(
            user=user, created_by=actor, webauthn_user_id=secrets.token_bytes(32),
            totp_enrolled_at=now, rotated_at=now,
        )
        device = _enroll_totp(user)
        audit.record("breakglass.created", actor=actor, account=name, email=email,
                     factors=["totp"], superuser=True)
    totp_secret, totp_uri = _totp_secrets(device)
    url, expires = issue_enrollment(account, actor=actor) if webauthn_link else ("", None)
    return account, Secrets(password, totp_secret, totp_uri, url, expires)


def rotate(name: str, *, actor: str, reset_keys: bool = False) -> tuple[BreakGlassAccount, Secrets]:
    """New password and TOTP seed; clears rotate_required; ends the account's sessions."""
    account = get_account(name)
    password = generate_password()
    with transaction.atomic():
        account = BreakGlassAccount.objects.select_for_update().select_related("user").get(pk=account.pk)
        account.user.set_password(normalize_password(password))
        account.user.save(update_fields=["password"])
        device = _enroll_totp(account.user)
        removed_keys = 0
        if reset_keys:
            removed_keys, _ = account.keys.all().delete()
        was_required = account.rotate_required
        now = timezone.now()
        account.rotate_required = False
        account.rotated_at = now
        account.totp_enrolled_at = now
        account.save(update_fields=["rotate_required", "rotated_at", "totp_enrolled_at"])
        ended = sessions.end_sessions(account.user_id)
        audit.record("breakglass.rotated", actor=actor, account=name, was_required=was_required,
                     security_keys_removed=removed_keys, sessions_ended=ended)
    totp_secret, totp_uri = _totp_secrets(device)
    url, expires = issue_enrollment(account, actor=actor) if reset_keys else ("", None)
    return account, Secrets(password, totp_secret, totp_uri, url, expires)


def set_disabled(name: str, disabled: bool, *, actor: str) -> tuple[BreakGlassAccount, bool]:
    """Disable or enable; returns (account, changed). Disabling ends its sessions."""
    account = get_account(name)
    if account.disabled == disabled:
        return account, False
    with transaction.atomic():
        account.disabled = disabled
        account.save(update_fields=["disabled"])
        ended = sessions.end_sessions(account.user_id) if disabled else 0
        audit.record("breakglass.disabled" if disabled else "breakglass.enabled", actor=actor,
                     account=name, sessions_ended=ended)
    return account, True


def summary(account: BreakGlassAccount) -> dict[str, Any]:
    """Non-secret description for the CLI and the system checks."""
    keys = list(account.keys.all())
    return {
        "name": account.name,
        "email": account.user.email,
        "enabled": not account.disabled and account.user.is_active,
        "created_at": account.created_at,
        "last_used_at": account.last_used_at,
        "last_tested_at": account.last_tested_at,
        "rotate_required": account.rotate_required,
        "rotated_at": account.rotated_at,
        "factors": {
            "totp": totp_device(account.user) is not None,
            "webauthn": len(keys),
        },
        "federated": FederatedIdentity.objects.filter(user_id=account.user_id).exists(),
    }


def last_activity(account: BreakGlassAccount) -> datetime:
    """When the account was last proven to work (used or tested); creation if never."""
    return max(t for t in (account.last_used_at, account.last_tested_at, account.created_at) if t)
