"""Read-only views: every change goes through the services (and the audit chain)."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from governance.models import Approval, Channel, Deployment, RegressionCase, SignoffRequest


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
