"""The audit log every app appends to. The tables keep the names they had in reviews
(`db_table`): the append-only triggers and the documented erasure steps name them."""

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Append-only, hash-chained record of every decision, configuration and lifecycle change.

    An event is written in the transaction of the change it records, without its seal: `seq`,
    `prev_hash` and `hash` stay empty until the sealer (core/audit/sealer.py) chains it, in id
    order, once every event with a smaller id is final. hash = SHA-256(prev_hash + canonical
    JSON of the event's fields). `AuditHead` publishes the last sealed sequence number and hash,
    so a truncated tail is detected too. The database refuses any other change (core migration
    0002): the seal is written once, and nothing an event says ever changes.
    """

    seq = models.BigIntegerField(unique=True, null=True, blank=True)
    created_at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    # NULL, not "", until sealed: many unsealed events must not collide on the unique hash, and
    # the seal-once guard tells "not sealed yet" by it.
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, unique=True, null=True, blank=True)

    class Meta:
        db_table = "reviews_auditevent"
        ordering = ["seq"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]
        permissions = [("view_audit_log", "Can read and export the audit log")]

    def __str__(self) -> str:
        number = f"#{self.seq}" if self.seq is not None else f"(unsealed, id {self.pk})"
        return f"{number} {self.action} {self.object_type}:{self.object_id}"


class AuditHead(models.Model):
    """A single row: the sealed chain's head. Only sealers lock it (one sealing batch at a time);
    appenders never touch it."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "reviews_audithead"

    def __str__(self) -> str:
        return f"audit head #{self.seq}"
