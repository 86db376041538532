"""Thin API views: validate, call a service or selector, serialize."""

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.filters import IdFilter
from core.api.permissions import allowed
from reviews import selectors, services
from reviews.api.serializers import (
    AgreementSerializer,
    ClaimSerializer,
    GoldInSerializer,
    IngestResultSerializer,
    LeaseSerializer,
    OutputInSerializer,
    OutputSerializer,
    QueueSerializer,
    QueueWithCountsSerializer,
    ReviewInSerializer,
    ReviewSerializer,
    RoutingRuleSerializer,
)
from reviews.errors import QueueNotFound
from reviews.models import Output, Queue, Review, RoutingRule


class OutputFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Output.Status.choices)
    queue = django_filters.CharFilter(field_name="queue__name")
    tag = django_filters.CharFilter(field_name="tag_rows__name")
    model = django_filters.CharFilter(field_name="model_name")
    model_version = django_filters.CharFilter()
    source = django_filters.CharFilter()
    resolution = django_filters.ChoiceFilter(choices=Output.Resolution.choices)

    class Meta:
        model = Output
        fields = ["status", "queue", "tag", "model", "model_version", "source", "resolution"]


class OutputListCreateApi(generics.ListAPIView):
    """List outputs (overseers); ingest one or a list of up to 1,000 (ml_engineer, admin)."""

    serializer_class = OutputSerializer
    filterset_class = OutputFilter

    def get_permissions(self):
        if self.request.method == "POST":
            return [allowed("outputs.ingest")()]
        return [allowed("outputs.read")()]

    def get_queryset(self):
        return (
            selectors.outputs_visible_to(user=self.request.user)
            .select_related("queue", "routing_rule")
            .order_by("-id")
        )

    @extend_schema(
        request=OutputInSerializer(many=True),
        responses={201: IngestResultSerializer, 200: IngestResultSerializer},
        description=(
            "One output object or a list of up to 1,000, validated all or nothing. Re-posting "
            "an existing (source, external_id) returns the stored record; nothing is duplicated."
        ),
    )
    def post(self, request: Request) -> Response:
        result = services.outputs_ingest(payload=request.data, actor=request.user)
        created = result.created_count
        body = {
            "created": created,
            "existing": len(result.items) - created,
            "items": result.items,
        }
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(IngestResultSerializer(body).data, status=code)


class OutputDetailApi(generics.RetrieveAPIView):
    serializer_class = OutputSerializer
    permission_classes = [allowed("outputs.read")]

    def get_queryset(self):
        return selectors.outputs_visible_to(user=self.request.user).select_related(
            "queue", "routing_rule"
        )


class OutputGoldApi(APIView):
    permission_classes = [allowed("outputs.mark_gold")]

    @extend_schema(request=GoldInSerializer, responses=OutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        data = GoldInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        output = get_object_or_404(Output, pk=pk)
        output = services.output_mark_gold(
            output=output, user=request.user, is_gold=data.validated_data["is_gold"]
        )
        return Response(OutputSerializer(output).data)


class QueueListCreateApi(generics.ListAPIView):
    # Active queues the caller may see, with counts, paginated; create one (lead, admin).
    serializer_class = QueueWithCountsSerializer

    def get_permissions(self):
        if self.request.method == "POST":
            return [allowed("queues.manage")()]
        return [allowed("any_role")()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Queue.objects.none()
        return selectors.queues_for(user=self.request.user)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.request.method == "GET":
            context["counts"] = selectors.queue_counts(
                queues=selectors.queues_for(user=self.request.user), user=self.request.user
            )
        return context

    @extend_schema(request=QueueSerializer, responses={201: QueueSerializer})
    def post(self, request: Request) -> Response:
        data = QueueSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        queue = services.queue_save(user=request.user, **data.validated_data)
        return Response(QueueSerializer(queue).data, status=status.HTTP_201_CREATED)


def _queue_or_404(user, pk: int) -> Queue:
    queue = next((q for q in selectors.queues_for(user=user) if q.pk == int(pk)), None)
    if queue is None:
        raise QueueNotFound("No such queue, or not one you may see.")
    return queue


class QueueDetailApi(APIView):
    @extend_schema(responses=QueueSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(QueueSerializer(_queue_or_404(request.user, pk)).data)

    @extend_schema(request=QueueSerializer, responses=QueueSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        queue = get_object_or_404(Queue, pk=pk)
        data = QueueSerializer(queue, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        queue = services.queue_save(user=request.user, queue=queue, **data.validated_data)
        return Response(QueueSerializer(queue).data)

    def get_permissions(self):
        if self.request.method == "PATCH":
            return [allowed("queues.manage")()]
        return [allowed("any_role")()]


class QueueAgreementApi(APIView):
    permission_classes = [allowed("queues.agreement")]

    @extend_schema(responses=AgreementSerializer)
    def get(self, request: Request, pk: int) -> Response:
        queue = get_object_or_404(Queue, pk=pk)
        agreement = selectors.queue_agreement(queue=queue)
        body = {
            "items": agreement.items,
            "percent_agreement": agreement.percent_agreement,
            "cohens_kappa": agreement.cohens_kappa,
            "label_counts": agreement.label_counts,
            "gold": selectors.gold_agreement(queue=queue),
        }
        return Response(AgreementSerializer(body).data)


def _claim_body(lease) -> dict:
    """What a reviewer gets with a lease: the item (blind) and the queue's current guidelines."""
    guidelines = selectors.guidelines_current(queue=lease.queue)
    return ClaimSerializer({"lease": lease, "item": lease.output, "guidelines": guidelines}).data


class QueueClaimApi(APIView):
    """Lease the next item of the queue to the caller: 200 with it, 204 when nothing is left."""

    permission_classes = [allowed("queues.work")]

    @extend_schema(
        request=None,
        responses={
            200: ClaimSerializer,
            204: OpenApiResponse(description="Nothing left in this queue for you."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        queue = Queue.objects.filter(pk=pk).first()
        if queue is None:
            raise QueueNotFound("No such queue.")
        lease = services.queue_claim_next(queue=queue, user=request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_claim_body(lease))


class LeaseRenewApi(APIView):
    permission_classes = [allowed("queues.work")]

    @extend_schema(request=None, responses=LeaseSerializer)
    def post(self, request: Request, pk: str) -> Response:
        lease = services.lease_renew(lease_id=pk, user=request.user)
        return Response(LeaseSerializer(lease).data)


class LeaseReleaseApi(APIView):
    permission_classes = [allowed("queues.work")]

    @extend_schema(request=None, responses=LeaseSerializer)
    def post(self, request: Request, pk: str) -> Response:
        lease = services.lease_release(lease_id=pk, user=request.user)
        return Response(LeaseSerializer(lease).data)


class ReviewFilter(django_filters.FilterSet):
    output = IdFilter(field_name="output_id")
    reviewer = django_filters.CharFilter(field_name="reviewer__username")
    queue = django_filters.CharFilter(field_name="queue__name")
    decision = django_filters.ChoiceFilter(choices=Review.Decision.choices)
    stage = django_filters.ChoiceFilter(choices=Review.Stage.choices)

    class Meta:
        model = Review
        fields = ["output", "reviewer", "queue", "decision", "stage"]


class ReviewListCreateApi(generics.ListAPIView):
    """Submit a decision on a leased item; list reviews (blind: others' only once resolved)."""

    serializer_class = ReviewSerializer
    filterset_class = ReviewFilter

    def get_permissions(self):
        if self.request.method == "POST":
            return [allowed("queues.work")()]
        return [allowed("any_role")()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Review.objects.none()
        return selectors.reviews_visible_to(user=self.request.user).order_by("-id")

    @extend_schema(request=ReviewInSerializer, responses={201: ReviewSerializer})
    def post(self, request: Request) -> Response:
        data = ReviewInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        review = services.review_submit(
            lease_id=values["lease"],
            user=request.user,
            decision=values["decision"],
            corrected_output=values["corrected_output"],
            reason=values["reason"],
            comment=values["comment"],
        )
        return Response(ReviewSerializer(review).data, status=status.HTTP_201_CREATED)


class ReviewUndoApi(APIView):
    """Take back your most recent decision; the item is leased back to you to decide again."""

    permission_classes = [allowed("queues.work")]

    @extend_schema(request=None, responses=ClaimSerializer)
    def post(self, request: Request, pk: int) -> Response:
        lease = services.review_undo(review_id=pk, user=request.user)
        return Response(_claim_body(lease))


class RoutingRuleListCreateApi(generics.ListAPIView):
    serializer_class = RoutingRuleSerializer
    queryset = RoutingRule.objects.select_related("queue").order_by("position", "id")

    def get_permissions(self):
        if self.request.method == "POST":
            return [allowed("queues.manage")()]
        return [allowed("routing.read")()]

    @extend_schema(request=RoutingRuleSerializer, responses={201: RoutingRuleSerializer})
    def post(self, request: Request) -> Response:
        data = RoutingRuleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rule = services.routing_rule_save(user=request.user, **data.validated_data)
        return Response(RoutingRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class RoutingRuleDetailApi(APIView):
    def get_permissions(self):
        if self.request.method in ("PATCH", "DELETE"):
            return [allowed("queues.manage")()]
        return [allowed("routing.read")()]

    @extend_schema(responses=RoutingRuleSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(RoutingRuleSerializer(get_object_or_404(RoutingRule, pk=pk)).data)

    @extend_schema(request=RoutingRuleSerializer, responses=RoutingRuleSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        rule = get_object_or_404(RoutingRule, pk=pk)
        data = RoutingRuleSerializer(rule, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        rule = services.routing_rule_save(user=request.user, rule=rule, **data.validated_data)
        return Response(RoutingRuleSerializer(rule).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.routing_rule_delete(user=request.user, rule=get_object_or_404(RoutingRule, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
