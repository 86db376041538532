"""Read-only views: every change goes through the services (and the audit chain)."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from monitoring.models import ChannelMonitoring, DriftAlert, Webhook, WebhookDelivery


@admin.register(ChannelMonitoring)
class ChannelMonitoringAdmin(ReadOnlyAdmin):
    list_display = ["channel"]


@admin.register(DriftAlert)
class DriftAlertAdmin(ReadOnlyAdmin):
    list_display = ["version", "channel", "metric", "status", "observed", "baseline", "raised_at"]


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    # The secret signs every delivery: never shown again after it is created.
    list_display = ["name", "url", "is_active", "created_at"]
    exclude = ["secret"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["webhook", "event", "status", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status", "event"]
