"""Break-glass accounts: local emergency administrators that never take part in SSO.

A ``BreakGlassAccount`` wraps one local ``User`` with a usable password and no
``FederatedIdentity``. Its second factors are a django-otp ``TOTPDevice`` (fallback) and
WebAuthn security keys (``BreakGlassSecurityKey``, primary). Throttling state lives in the
database (``BreakGlassThrottle``) so it keeps working with Redis down.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class BreakGlassAccount(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="breakglass"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=300, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    # Set by every use (and drill); cleared only by ``breakglass rotate``.
    rotate_required = models.BooleanField(default=False)
    rotated_at = models.DateTimeField(null=True, blank=True)
    disabled = models.BooleanField(default=False)
    # Factor enrolment.
    totp_enrolled_at = models.DateTimeField(null=True, blank=True)
    # Opaque WebAuthn user handle (never the username), fixed for the account's lifetime.
    webauthn_user_id = models.BinaryField(max_length=64)

    class Meta:
        verbose_name = "break-glass account"
        ordering = ["user__username"]

    def __str__(self) -> str:
        return self.user.get_username()

    @property
    def name(self) -> str:
        return self.user.get_username()


class BreakGlassSecurityKey(models.Model):
    """A WebAuthn credential registered for a break-glass account."""

    account = models.ForeignKey(BreakGlassAccount, on_delete=models.CASCADE, related_name="keys")
    credential_id = models.BinaryField(max_length=1024)
    credential_id_b64 = models.CharField(max_length=1400, unique=True)
    public_key = models.BinaryField()
    sign_count = models.PositiveBigIntegerField(default=0)
    aaguid = models.CharField(max_length=36, blank=True)
    transports = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "break-glass security key"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.account} key {self.credential_id_b64[:12]}…"


class BreakGlassEnrollment(models.Model):
    """A one-time, short-lived link for registering a security key in a browser.

    Only the SHA-256 of the link's secret is stored.
    """

    account = models.ForeignKey(BreakGlassAccount, on_delete=models.CASCADE, related_name="enrollments")
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    # The registration challenge last handed to the browser for this link.
    challenge = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"enrolment #{self.pk} for {self.account}"


class BreakGlassThrottle(models.Model):
    """Failures and the next allowed attempt, per account name or per client IP."""

    class Scope(models.TextChoices):
        ACCOUNT = "account", "account"
        IP = "ip", "client IP"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    key = models.CharField(max_length=255)
    failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    next_allowed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="breakglass_throttle_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key} ({self.failures})"
