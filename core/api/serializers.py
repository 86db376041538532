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
