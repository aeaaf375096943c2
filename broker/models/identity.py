"""Federated identities: the (idp, subject) -> local user link."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .idp import IdentityProvider


class FederatedIdentity(models.Model):
    """A subject at one IdP. The pair (idp, subject) is the identity; e-mail never is."""

    idp = models.ForeignKey(IdentityProvider, on_delete=models.PROTECT, related_name="identities")
    subject = models.CharField(max_length=512)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="federated_identities"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)
    last_attributes = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["idp", "subject"], name="federated_identity_unique"),
        ]
        verbose_name_plural = "federated identities"

    def __str__(self) -> str:
        return f"{self.idp.slug}:{self.subject}"
