"""The audit log: events (written only through ``broker.audit.record``) and signed checkpoints.

Both tables are append-only in the database itself (triggers, migration 0002; privileges,
``audit setup-roles``). The one permitted UPDATE is the sealer's: ``seq``, ``prev_hash`` and
``hash`` of an unsealed event, from NULL to values, every other column unchanged.
"""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """One security-relevant event. Rows are never updated (except sealing) nor deleted."""

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
    # The hash chain, filled by the sealer (broker.audit.chain) after the insert commits:
    # gap-free position, the previous event's hash, SHA-256(canonical event || prev_hash).
    seq = models.BigIntegerField(null=True, blank=True)
    # NULL, not "": "unsealed" is what the triggers and the partial index test for.
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["id"]
        permissions = [("export_auditevent", "Can export the audit log")]
        constraints = [
            # One event per position (the chain cannot fork); partial, so an unsealed event
            # costs no entry here.
            models.UniqueConstraint(fields=["seq"], name="broker_audit_seq_unique",
                                    condition=models.Q(seq__isnull=False)),
        ]
        indexes = [
            # Finds the events still to seal without scanning the sealed ones.
            models.Index(fields=["id"], name="broker_audit_unsealed",
                         condition=models.Q(seq__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.time:%Y-%m-%d %H:%M:%S} {self.action} {self.outcome}"


class AuditCheckpoint(models.Model):
    """An Ed25519 signature over (chain, last seq, head hash, time); also kept outside the DB."""

    chain = models.CharField(max_length=64, help_text="Hash of seq 1: names the chain.")
    seq = models.BigIntegerField(db_index=True)
    head_hash = models.CharField(max_length=64)
    time = models.DateTimeField()
    key_fingerprint = models.CharField(max_length=80)
    signature = models.CharField(max_length=128)
    reason = models.CharField(max_length=16, help_text="events, time, manual or export")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"checkpoint #{self.pk} seq {self.seq}"
