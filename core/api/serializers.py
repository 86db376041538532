"""Serializers of the audit log's API."""

from rest_framework import serializers

from core.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "created_at",
            "actor_name",
            "action",
            "object_type",
            "object_id",
            "payload",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class AuditVerifySerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    events = serializers.IntegerField(allow_null=True)
    broken_at = serializers.IntegerField(allow_null=True)
    detail = serializers.CharField()
    head_seq = serializers.IntegerField(required=False)
    head_hash = serializers.CharField(required=False)
    sealed_seq = serializers.IntegerField(help_text="the chain is sealed through this event")
    unsealed = serializers.IntegerField(help_text="committed events still waiting for their seal")
    oldest_unsealed_at = serializers.DateTimeField(allow_null=True)
    seal_lag_seconds = serializers.FloatField(
        help_text="how long the oldest unsealed event has waited"
    )
    seal_lag_limit_seconds = serializers.FloatField(help_text="AUDIT_SEAL_LAG_SECONDS")
    sealing_overdue = serializers.BooleanField(
        help_text="events have waited longer than the limit: verify_audit fails"
    )
