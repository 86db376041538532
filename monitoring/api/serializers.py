"""Monitoring API input and output serializers.

The outputs write what the hand-made dicts they replaced wrote (tests/test_api_serializers.py
keeps those dicts and compares), including how datetimes look: alerts, webhooks and deliveries
have always written theirs with Python's `isoformat()` (`+00:00`), not DRF's `Z`, so they use
`IsoformatDateTimeField`. The figures' rates, buckets and drift check are computed by
`monitoring.selectors` and described in docs/monitoring.md; they stay JSON objects here."""

from datetime import datetime

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance.api.serializers import VersionRefOutput
from monitoring.models import ChannelMonitoring, DriftAlert

# -- inputs ------------------------------------------------------------------------------------


class MonitoringSettingsInput(serializers.Serializer):
    audit_sample_rate = serializers.FloatField(min_value=0, max_value=1)
    audit_queue = serializers.CharField(required=False, allow_blank=True, default="")
    margin = serializers.FloatField(required=False, allow_null=True, default=None)
    min_samples = serializers.IntegerField(required=False, allow_null=True, default=None)
    baseline = serializers.DictField(child=serializers.FloatField(), required=False, default=dict)


class RetrainInput(serializers.Serializer):
    alert = serializers.IntegerField(required=False, allow_null=True, default=None)
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    hyperparameters = serializers.DictField(required=False, allow_null=True, default=None)


class WebhookInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    url = serializers.CharField(max_length=500)
    events = serializers.ListField(child=serializers.CharField(max_length=64))
    is_active = serializers.BooleanField(required=False, default=True)
    secret = serializers.CharField(required=False, allow_blank=True, default="", max_length=128)


# -- outputs -----------------------------------------------------------------------------------


class IsoformatDateTimeField(serializers.DateTimeField):
    """`value.isoformat()` as stored (UTC: `+00:00`), as these answers always wrote it."""

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class DriftAlertOutput(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.UUIDField(source="version_id")
    version_name = serializers.CharField(source="version.name")
    channel = serializers.CharField(source="channel.name")
    metric = serializers.CharField(help_text="correction or rejection")
    status = serializers.CharField(help_text="open or acknowledged")
    observed = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    baseline = serializers.FloatField()
    baseline_source = serializers.CharField()
    margin = serializers.FloatField()
    samples = serializers.IntegerField()
    raised_at = IsoformatDateTimeField()
    acknowledged_by = serializers.SerializerMethodField()
    retrain_run = serializers.UUIDField(source="retrain_run_id", allow_null=True)

    def get_acknowledged_by(self, alert: DriftAlert) -> str | None:
        return alert.acknowledged_by.get_username() if alert.acknowledged_by else None


class RateOutput(serializers.Serializer):
    """A share with its Wilson 95 % interval; `rate` is null without any sample."""

    count = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()


class RatesOutput(serializers.Serializer):
    approval = RateOutput()
    correction = RateOutput()
    rejection = RateOutput()
    escalation = RateOutput()


class ChannelFiguresOutput(serializers.Serializer):
    """A live channel's version and its figures."""

    channel = serializers.CharField()
    version = VersionRefOutput()
    traffic = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    rates = RatesOutput()
    predicted = serializers.DictField(help_text="What its evaluation predicted, and from where.")
    buckets = serializers.ListField(child=serializers.DictField())
    drift = serializers.DictField(help_text="The drift check (docs/monitoring.md).")
    audit_sample_rate = serializers.FloatField(allow_null=True)


class MonitoringOverviewOutput(serializers.Serializer):
    channels = ChannelFiguresOutput(many=True)
    open_alerts = DriftAlertOutput(many=True)


class VersionStatusRefOutput(VersionRefOutput):
    status = serializers.CharField()


class VersionChannelFiguresOutput(serializers.Serializer):
    """A version's figures on one channel it served; `drift` only while it is live there."""

    channel = serializers.CharField()
    live = serializers.BooleanField()
    traffic = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    rates = RatesOutput()
    buckets = serializers.ListField(child=serializers.DictField())
    drift = serializers.DictField(allow_null=True)


class VersionMonitoringOutput(serializers.Serializer):
    version = VersionStatusRefOutput()
    bucket = serializers.CharField()
    since = serializers.CharField(allow_null=True, help_text="ISO 8601, as asked")
    traffic = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    rates = RatesOutput()
    predicted = serializers.DictField()
    buckets = serializers.ListField(child=serializers.DictField())
    channels = VersionChannelFiguresOutput(many=True)
    alerts = DriftAlertOutput(many=True)


class ChannelMonitoringOutput(serializers.Serializer):
    channel = serializers.CharField(source="channel.name")
    audit_sample_rate = serializers.FloatField()
    audit_queue = serializers.SerializerMethodField(help_text="The review queue it samples to.")
    margin = serializers.FloatField(allow_null=True)
    min_samples = serializers.IntegerField(allow_null=True)
    baseline = serializers.DictField()
    routing_rules = serializers.SerializerMethodField(
        help_text="The two routing rules it writes: the audit sample, then the auto-accept."
    )

    def get_audit_queue(self, setting: ChannelMonitoring) -> str | None:
        return setting.audit_queue.name if setting.audit_queue else None

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField(allow_null=True)))
    def get_routing_rules(self, setting: ChannelMonitoring) -> list[int | None]:
        return [setting.audit_rule_id, setting.accept_rule_id]


class RetrainOutput(serializers.Serializer):
    """Given {"run": the new training run, "parent": the version it continues}."""

    training_run = serializers.UUIDField(source="run.pk")
    model_version = serializers.UUIDField(source="run.model_version.pk")
    model_version_name = serializers.CharField(source="run.model_version.name")
    parent_version = serializers.UUIDField(source="parent.pk")
    dataset_version = serializers.IntegerField(source="run.dataset_version_id")


class WebhookOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    created_at = IsoformatDateTimeField()


class WebhookCreatedOutput(WebhookOutput):
    """The only answer that shows the secret."""

    secret = serializers.CharField()


class WebhookDeliveryOutput(serializers.Serializer):
    id = serializers.UUIDField()
    webhook = serializers.CharField(source="webhook.name")
    event = serializers.CharField()
    status = serializers.CharField(help_text="pending, delivered or failed")
    attempts = serializers.IntegerField()
    next_attempt_at = IsoformatDateTimeField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    log = serializers.ListField(child=serializers.DictField())
    created_at = IsoformatDateTimeField()
    delivered_at = IsoformatDateTimeField(allow_null=True)
