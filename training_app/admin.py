"""Read-only views: every change goes through the services (and the audit chain)."""

from django.contrib import admin

from .models import (
    Approval,
    BaseModel,
    Channel,
    ChannelMonitoring,
    Deployment,
    DriftAlert,
    Evaluation,
    ModelVersion,
    RegressionCase,
    SignoffRequest,
    TrainingRun,
    Webhook,
    WebhookDelivery,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BaseModel)
class BaseModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "architecture", "revision", "folder", "created_at"]


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "dataset_version", "base_model", "attempts", "created_at"]
    list_filter = ["status"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "status", "base_model", "dataset_version", "created_at"]
    list_filter = ["status"]


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["id", "version", "reference", "status", "created_at"]


@admin.register(Channel)
class ChannelAdmin(ReadOnlyAdmin):
    list_display = ["name", "live_version", "description"]


@admin.register(SignoffRequest)
class SignoffRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "version", "channel", "status", "requested_by", "created_at"]
    list_filter = ["status", "channel"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["id", "request", "approver", "decision", "override", "created_at"]


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "action", "version", "replaced", "actor", "created_at"]
    list_filter = ["channel", "action"]


@admin.register(RegressionCase)
class RegressionCaseAdmin(ReadOnlyAdmin):
    list_display = ["channel", "position", "prompt"]


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
