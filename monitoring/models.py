"""Monitoring: each channel's audit sample and drift thresholds, drift alerts, webhooks.

The tables keep the names they had in training_app (`db_table`)."""

import uuid

from django.conf import settings
from django.db import models


class ChannelMonitoring(models.Model):
    """A channel's audit sample and drift thresholds (defaults: SIGNOFF_MONITORING).

    The sample itself is two routing rules owned by this row: `audit_rule` sends
    `audit_sample_rate` of the channel's outputs (source `channel:<name>`) to `audit_queue`,
    and `accept_rule` auto-accepts the rest, so routing stays the only place that decides."""

    channel = models.OneToOneField(
        "governance.Channel", on_delete=models.CASCADE, related_name="monitoring"
    )
    audit_sample_rate = models.FloatField(default=0.0)
    audit_queue = models.ForeignKey(
        "reviews.Queue", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    audit_rule = models.ForeignKey(
        "reviews.RoutingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accept_rule = models.ForeignKey(
        "reviews.RoutingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    margin = models.FloatField(null=True, blank=True, help_text="Empty: the default margin.")
    min_samples = models.PositiveIntegerField(null=True, blank=True)
    baseline = models.JSONField(
        default=dict, blank=True, help_text="{correction|rejection: rate} overriding the default."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "training_app_channelmonitoring"

    def __str__(self) -> str:
        return f"monitoring of {self.channel_id}"


class DriftAlert(models.Model):
    """A live version's correction or rejection rate rose above its baseline: raised once per
    (version, channel, metric); the unique constraint is the guard against a second one."""

    class Metric(models.TextChoices):
        CORRECTION = "correction", "Correction rate"
        REJECTION = "rejection", "Rejection rate"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"

    TRANSITIONS = {Status.OPEN: {Status.ACKNOWLEDGED}, Status.ACKNOWLEDGED: set()}

    version = models.ForeignKey(
        "training_app.ModelVersion", on_delete=models.PROTECT, related_name="drift_alerts"
    )
    channel = models.ForeignKey(
        "governance.Channel", on_delete=models.PROTECT, related_name="drift_alerts"
    )
    metric = models.CharField(max_length=16, choices=Metric.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    baseline = models.FloatField()
    baseline_source = models.CharField(max_length=32)
    observed = models.FloatField()
    ci_low = models.FloatField()
    ci_high = models.FloatField()
    margin = models.FloatField()
    samples = models.PositiveIntegerField()
    window_start = models.DateTimeField()
    raised_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    retrain_run = models.ForeignKey(
        "training_app.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        db_table = "training_app_driftalert"
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "channel", "metric"], name="one_drift_alert_per_metric"
            )
        ]

    def __str__(self) -> str:
        return f"{self.metric} drift of {self.version_id} on {self.channel_id}"


class Webhook(models.Model):
    """An HTTP callback for lifecycle events, signed with HMAC-SHA256 over `timestamp.body`."""

    class Event(models.TextChoices):
        AWAITING_SIGNOFF = "version.awaiting_signoff", "Version awaiting sign-off"
        APPROVED = "version.approved", "Version approved"
        DEPLOYED = "channel.deployed", "Version deployed"
        ROLLED_BACK = "channel.rolled_back", "Channel rolled back"
        DRIFT_ALERT = "drift.alert", "Drift alert"

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    events = models.JSONField(default=list, help_text="Event names; empty: none.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "training_app_webhook"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One event for one webhook, and what happened to each attempt at delivering it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True, help_text="[{at, status_code, error}]")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "training_app_webhookdelivery"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id}"
