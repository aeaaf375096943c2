"""Local roles, the rules that map IdP claims to them, and who holds which."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from .idp import IdentityProvider

role_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
    "Letters, digits, '_', '.', ':' and '-' (max 64), starting with a letter or digit.",
)
MAX_PATTERN_LENGTH = 500


class Role(models.Model):
    """A local role. Its Django group carries the permissions; flags grant admin access."""

    name = models.CharField(max_length=64, unique=True, validators=[role_name_validator])
    description = models.CharField(max_length=300, blank=True)
    group = models.OneToOneField(Group, on_delete=models.PROTECT, related_name="broker_role")
    grants_staff = models.BooleanField(
        default=False, help_text="Holders may enter the Django admin (with the group's permissions)."
    )
    grants_superuser = models.BooleanField(
        default=False, help_text="Holders get every permission. Implies staff."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def summary(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "grants_staff": self.grants_staff,
            "grants_superuser": self.grants_superuser,
        }


class RoleMapping(models.Model):
    """If a login's claim ``claim`` has a value matching ``value``, grant ``role``.

    ``idp`` empty means any IdP. Regular expressions must match the whole value.
    Rules are data (claim, value, kind), never stored code.
    """

    class Match(models.TextChoices):
        EXACT = "exact", "exact"
        REGEX = "regex", "regular expression (full match)"

    idp = models.ForeignKey(
        IdentityProvider, null=True, blank=True, on_delete=models.CASCADE,
        related_name="role_mappings", help_text="Empty: any IdP.",
    )
    claim = models.CharField(max_length=200, help_text="Canonical attribute name, e.g. groups.")
    value = models.CharField(max_length=MAX_PATTERN_LENGTH)
    match = models.CharField(max_length=8, choices=Match.choices, default=Match.EXACT)
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="mappings")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["role__name", "claim", "value"]
        constraints = [
            models.UniqueConstraint(
                fields=["idp", "claim", "value", "match", "role"],
                name="role_mapping_unique",
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        scope = self.idp.slug if self.idp_id else "*"
        op = "~" if self.match == self.Match.REGEX else "="
        return f"[{scope}] {self.claim} {op} {self.value} -> {self.role.name}"

    def clean(self) -> None:
        if self.match == self.Match.REGEX:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValidationError({"value": f"invalid regular expression: {exc}"}) from exc

    def summary(self) -> dict:
        return {
            "id": self.pk,
            "idp": self.idp.slug if self.idp_id else None,
            "claim": self.claim,
            "value": self.value,
            "match": self.match,
            "role": self.role.name,
        }


class UserRole(models.Model):
    """A role held by a user, and why.

    ``federation`` rows are owned by login-time sync (granted and revoked from claims);
    ``manual`` rows are assigned by an admin and never touched by a login.
    """

    class Source(models.TextChoices):
        FEDERATION = "federation", "federation (mapped from IdP claims)"
        MANUAL = "manual", "manual"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="broker_roles"
    )
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="holders")
    source = models.CharField(max_length=12, choices=Source.choices)
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "role", "source"], name="user_role_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} has {self.role} ({self.source})"
