"""Admin: lifecycle fields are read-only, configuration saves go through the audited services,
and the audit log can be read but never changed."""

from django.contrib import admin
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from reviews import services
from reviews.models import GuidelineVersion, Lease, Output, Queue, Review, RoutingRule
from reviews.services.queues import QUEUE_FIELDS, RULE_FIELDS


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "role",
        "required_reviews",
        "lease_seconds",
        "gold_rate",
        "is_active",
    ]
    readonly_fields = ["kind", "created_at"]

    def save_model(self, request, obj, form, change):
        values = {f: form.cleaned_data[f] for f in form.changed_data if f in QUEUE_FIELDS}
        saved = services.queue_save(user=request.user, queue=obj if change else None, **values)
        obj.pk = saved.pk

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = ["position", "name", "action", "queue", "is_active"]
    list_display_links = ["name"]
    ordering = ["position", "id"]

    def save_model(self, request, obj, form, change):
        values = {f: form.cleaned_data[f] for f in form.changed_data if f in RULE_FIELDS}
        saved = services.routing_rule_save(
            user=request.user, rule=obj if change else None, **values
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.routing_rule_delete(user=request.user, rule=obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Bulk deletion would bypass the audited service.
        return obj is not None and super().has_delete_permission(request, obj)


@admin.register(GuidelineVersion)
class GuidelineVersionAdmin(ReadOnlyAdmin):
    list_display = ["queue", "version", "created_by", "created_at"]


@admin.register(Output)
class OutputAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "source",
        "external_id",
        "model_name",
        "status",
        "queue",
        "resolution",
        "created_at",
    ]
    list_filter = ["status", "resolution", "queue", "model_name"]
    search_fields = ["external_id", "source"]


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["id", "output", "reviewer", "stage", "decision", "created_at"]
    list_filter = ["stage", "decision", "queue"]


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "output", "reviewer", "claimed_at", "expires_at", "end_reason"]
