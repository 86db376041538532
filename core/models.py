"""The audit log every app appends to. The tables keep the names they had in reviews
(`db_table`): the append-only triggers and the documented erasure steps name them."""

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Append-only, hash-chained record of every decision, configuration and lifecycle change.

    hash = SHA-256(prev_hash + canonical JSON of the event's fields). `AuditHead` publishes the
    last sequence number and hash, so a truncated tail is detected too.
    """

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "reviews_auditevent"
        ordering = ["seq"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]
        permissions = [("view_audit_log", "Can read and export the audit log")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id}"


class AuditHead(models.Model):
    """A single row: the chain's head. Appenders lock it, which serialises them briefly."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "reviews_audithead"

    def __str__(self) -> str:
        return f"audit head #{self.seq}"
