"""The auditors' audit log pages: the log's filters as a form with date pickers, and
"Verify the chain" as a page (the JSON answer stays at /api/audit/verify/)."""

import django_filters
from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_safe

from core.api.audit import AuditFilter
from core.api.filters import UtcDateTimeFilter
from core.audit.chain import audit_chain_check
from core.models import AuditEvent
from core.permissions import permission_required_for_page

AUDITORS_ONLY = "The audit log is for auditors and admins."


class DatePicker(forms.DateInput):
    """A browser date picker that still shows a full ISO time typed into the query string."""

    input_type = "date"

    def format_value(self, value):
        text = super().format_value(value)
        return text[:10] if isinstance(text, str) else text


class AuditLogFilter(AuditFilter):
    """The API's audit filters with the same query parameters, labelled for people: `since` and
    `until` take a day (midnight UTC) from a date picker, or any ISO 8601 time as the API does.
    `until` is exclusive, as in the API and the export, so the page and the export agree."""

    action = django_filters.CharFilter(
        label="Action", help_text="Exact action, e.g. review.submitted"
    )
    object_type = django_filters.CharFilter(label="Object type", help_text="e.g. output")
    object_id = django_filters.CharFilter(label="Object id")
    actor = django_filters.CharFilter(field_name="actor_name", label="Actor")
    since = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        label="From",
        help_text="Events on or after this day (UTC).",
        widget=DatePicker(),
    )
    until = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        label="Before",
        help_text="Events before this day (UTC); the day itself is left out.",
        widget=DatePicker(),
    )


@login_required
@require_safe
@permission_required_for_page("audit.read", AUDITORS_ONLY)
def audit_verify_page(request):
    """The whole chain verified: intact (with the head to copy elsewhere) or where it breaks."""
    return render(request, "training_app/audit_verify.html", {"check": audit_chain_check()})


@login_required
@require_safe
@permission_required_for_page("audit.read", "The audit log is for auditors and admins.")
def audit_log(request):
    """The audit log for auditors and admins, with the API's filters and a JSONL export."""
    events = AuditLogFilter(request.GET, queryset=AuditEvent.objects.order_by("-id"))
    page = Paginator(events.qs if events.is_valid() else AuditEvent.objects.none(), 100)
    return render(
        request,
        "training_app/audit.html",
        {
            "filter": events,
            "page": page.get_page(request.GET.get("page")),
            "query": request.GET.urlencode(),
        },
    )
