"""The audit log's API: the filtered list and the chain's verification."""

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.filters import UtcDateTimeFilter
from core.api.permissions import allowed
from core.api.serializers import AuditEventSerializer, AuditVerifySerializer
from core.audit import audit_sealing_status, audit_verify
from core.errors import AuditChainBroken
from core.models import AuditEvent, AuditHead


class AuditFilter(django_filters.FilterSet):
    action = django_filters.CharFilter()
    object_type = django_filters.CharFilter()
    object_id = django_filters.CharFilter()
    actor = django_filters.CharFilter(field_name="actor_name")
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "object_type", "object_id", "actor", "since", "until"]


class AuditListApi(generics.ListAPIView):
    """The audit log, read-only, oldest first (auditors and admins). In id order, which is the
    chain's order: events still waiting for their seal come last, with `seq` and `hash` null."""

    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.order_by("id")
    filterset_class = AuditFilter
    permission_classes = [allowed("audit.read")]


class AuditVerifyApi(APIView):
    permission_classes = [allowed("audit.read")]

    @extend_schema(responses=AuditVerifySerializer)
    def get(self, request: Request) -> Response:
        """Seal what is final, then verify the chain; also says how far it is sealed and how
        long the oldest unsealed event has waited (`sealing_overdue` past
        AUDIT_SEAL_LAG_SECONDS)."""
        try:
            count = audit_verify()
        except AuditChainBroken as broken:
            return Response(
                {
                    "ok": False,
                    "events": None,
                    "broken_at": broken.seq,
                    "detail": broken.message,
                    **audit_sealing_status().as_dict(),
                }
            )
        # The head, copied somewhere outside this database (a ticket, a signed e-mail), is what
        # proves later that nobody rewrote the whole tail and the head row together.
        head = AuditHead.objects.filter(pk=1).values("seq", "hash").first()
        return Response(
            {
                "ok": True,
                "events": count,
                "broken_at": None,
                "detail": "chain intact",
                "head_seq": head["seq"] if head else 0,
                "head_hash": head["hash"] if head else "",
                **audit_sealing_status().as_dict(),
            }
        )
