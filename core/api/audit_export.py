"""The audit log as JSONL with its hashes, for auditors to keep and re-verify elsewhere.

A new module beside reviews.api.views (wired into training_app.api.urls): streams the same
filters as GET /api/audit/, oldest first, one event per line with prev_hash and hash."""

import json
from collections.abc import Iterator

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from core.api.audit import AuditFilter
from core.api.permissions import allowed
from core.audit import audit_seal
from core.models import AuditEvent


def audit_jsonl(events) -> Iterator[str]:
    last = 0
    while True:
        chunk = list(events.filter(seq__gt=last).order_by("seq")[:2000])
        if not chunk:
            return
        for e in chunk:
            yield (
                json.dumps(
                    {
                        "seq": e.seq,
                        "created_at": e.created_at.isoformat(),
                        "actor_id": e.actor_id,
                        "actor_name": e.actor_name,
                        "action": e.action,
                        "object_type": e.object_type,
                        "object_id": e.object_id,
                        "payload": e.payload,
                        "prev_hash": e.prev_hash,
                        "hash": e.hash,
                    },
                    sort_keys=True,
                    ensure_ascii=False,
                )
                + "\n"
            )
        last = chunk[-1].seq


class AuditExportApi(APIView):
    permission_classes = [allowed("audit.read")]

    @extend_schema(
        parameters=[
            OpenApiParameter(name, OpenApiTypes.STR)
            for name in ("action", "object_type", "object_id", "actor")
        ]
        + [OpenApiParameter(name, OpenApiTypes.DATETIME) for name in ("since", "until")],
        responses={(200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR)},
    )
    def get(self, request):
        events = AuditFilter(request.GET, queryset=AuditEvent.objects.all())
        if not events.is_valid():
            from core.errors import ValidationFailed

            field = next(iter(events.errors))
            raise ValidationFailed(f"{field}: {events.errors[field][0]}", field=field)
        # The export is of the sealed chain (each line with its hashes): seal what is final
        # first, so that it ends with the events committed before it was asked for.
        audit_seal()
        answer = StreamingHttpResponse(
            audit_jsonl(events.qs), content_type="application/x-ndjson; charset=utf-8"
        )
        answer["Content-Disposition"] = 'attachment; filename="signoff-audit.jsonl"'
        return answer
