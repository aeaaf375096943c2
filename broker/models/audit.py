"""The audit event table. Written only through ``broker.audit.record``."""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """One security-relevant event. Rows are never updated or deleted."""

    time = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, default="success")
    actor = models.CharField(max_length=300, blank=True, db_index=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    idp = models.CharField(max_length=63, blank=True, db_index=True)
    subject = models.CharField(max_length=512, blank=True)
    reason = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.time:%Y-%m-%d %H:%M:%S} {self.action} {self.outcome}"
