"""Monitoring API: figures per version and channel, drift alerts, the audit sample, the
retraining trigger and webhooks. One view per operation: validate -> call a service."""

from datetime import datetime

from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed
from core.errors import NotFound
from governance.errors import InvalidGovernanceRequest
from governance.selectors import channel_get
from monitoring.api.serializers import (
    ChannelMonitoringOutput,
    DriftAlertOutput,
    MonitoringOverviewOutput,
    MonitoringSettingsInput,
    RetrainInput,
    RetrainOutput,
    VersionMonitoringOutput,
    WebhookCreatedOutput,
    WebhookDeliveryOutput,
    WebhookInput,
    WebhookOutput,
)
from monitoring.models import DriftAlert, Webhook, WebhookDelivery
from monitoring.selectors import BUCKETS, overview_figures, version_figures
from monitoring.services.drift import (
    channel_monitoring_save,
    drift_alert_acknowledge,
    retraining_start,
)
from monitoring.services.webhooks import webhook_save
from reviews.models import Queue
from training_app.selectors import model_version_get

FIGURE_PARAMS = [
    OpenApiParameter("bucket", str, enum=list(BUCKETS), description="day (default) or week"),
    OpenApiParameter("since", str, description="ISO 8601 date or time"),
]


def figure_params(query) -> tuple[str, datetime | None]:
    """bucket and since from a query string; 400 naming the field when wrong."""
    bucket = query.get("bucket", "day")
    if bucket not in BUCKETS:
        raise InvalidGovernanceRequest("day or week.", field="bucket")
    since = None
    raw = query.get("since")
    if raw:
        since = parse_datetime(raw)
        if since is None:
            day = parse_date(raw)
            if day is None:
                raise InvalidGovernanceRequest("An ISO 8601 date or time.", field="since")
            since = datetime(day.year, day.month, day.day)
        if since.tzinfo is None:
            from django.utils import timezone

            since = timezone.make_aware(since)
    return bucket, since


def alerts_list():
    return DriftAlert.objects.select_related("version", "channel", "acknowledged_by").order_by(
        "-raised_at", "-id"
    )


class MonitoringOverviewApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(parameters=FIGURE_PARAMS, responses=MonitoringOverviewOutput)
    def get(self, request):
        bucket, since = figure_params(request.query_params)
        overview = {
            "channels": overview_figures(bucket=bucket, since=since),
            # Every open alert, not a page of them: the overview is one document (a dashboard
            # reads it whole), and there is at most one open alert per version, channel and
            # metric.
            "open_alerts": alerts_list().filter(status="open"),
        }
        return Response(MonitoringOverviewOutput(overview).data)


class VersionMonitoringApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(parameters=FIGURE_PARAMS, responses=VersionMonitoringOutput)
    def get(self, request, version_id):
        bucket, since = figure_params(request.query_params)
        version = model_version_get(version_id=version_id)
        figures = version_figures(version=version, bucket=bucket, since=since)
        figures["alerts"] = alerts_list().filter(version=version)
        return Response(VersionMonitoringOutput(figures).data)


class DriftAlertListApi(generics.ListAPIView):
    # Drift alerts, newest first, paginated; `status` keeps open or acknowledged ones.
    permission_classes = [allowed("training.view")]
    serializer_class = DriftAlertOutput

    def get_queryset(self):
        alerts = alerts_list()
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in DriftAlert.Status.values:
                raise InvalidGovernanceRequest("open or acknowledged.", field="status")
            alerts = alerts.filter(status=wanted)
        return alerts

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=list(DriftAlert.Status.values))],
        operation_id="monitoring_alerts_retrieve",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _alert(pk: int) -> DriftAlert:
    alert = alerts_list().filter(pk=pk).first()
    if alert is None:
        raise NotFound(f"No drift alert {pk}.")
    return alert


class DriftAlertAcknowledgeApi(APIView):
    permission_classes = [allowed("monitoring.acknowledge")]

    @extend_schema(request=None, responses=DriftAlertOutput)
    def post(self, request, pk):
        alert = drift_alert_acknowledge(user=request.user, alert=_alert(pk))
        return Response(DriftAlertOutput(alert).data)


class ChannelMonitoringApi(APIView):
    permission_classes = [allowed("monitoring.configure")]

    @extend_schema(request=MonitoringSettingsInput, responses=ChannelMonitoringOutput)
    def put(self, request, name):
        data = MonitoringSettingsInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        queue = None
        if values["audit_queue"]:
            queue = Queue.objects.filter(name=values["audit_queue"]).first()
            if queue is None:
                raise InvalidGovernanceRequest("No such queue.", field="audit_queue")
        setting = channel_monitoring_save(
            user=request.user,
            channel=channel_get(name),
            audit_sample_rate=values["audit_sample_rate"],
            audit_queue=queue,
            margin=values["margin"],
            min_samples=values["min_samples"],
            baseline=values["baseline"],
        )
        return Response(ChannelMonitoringOutput(setting).data)


class RetrainApi(APIView):
    permission_classes = [allowed("monitoring.retrain")]

    @extend_schema(request=RetrainInput, responses={201: RetrainOutput})
    def post(self, request, version_id):
        data = RetrainInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = model_version_get(version_id=version_id)
        alert = None
        if data.validated_data["alert"] is not None:
            alert = DriftAlert.objects.filter(pk=data.validated_data["alert"]).first()
            if alert is None:
                raise InvalidGovernanceRequest("No such alert.", field="alert")
        run = retraining_start(
            user=request.user,
            version=version,
            alert=alert,
            name=data.validated_data["name"],
            hyperparameters=data.validated_data["hyperparameters"],
        )
        return Response(
            RetrainOutput({"run": run, "parent": version}).data, status=status.HTTP_201_CREATED
        )


class WebhookListCreateApi(generics.ListAPIView):
    # Webhooks by name, paginated, without their secrets; create one (its secret shown once).
    permission_classes = [allowed("webhooks.configure")]
    serializer_class = WebhookOutput
    queryset = Webhook.objects.order_by("name")

    @extend_schema(operation_id="webhooks_retrieve")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=WebhookInput, responses={201: WebhookCreatedOutput})
    def post(self, request):
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        hook = webhook_save(user=request.user, **data.validated_data)
        # The secret is shown once, to the admin who made it (and in the admin pages).
        return Response(WebhookCreatedOutput(hook).data, status=status.HTTP_201_CREATED)


class WebhookDeliveryListApi(generics.ListAPIView):
    # Deliveries, newest first, paginated (every one kept, not only the latest 200).
    permission_classes = [allowed("webhooks.configure")]
    serializer_class = WebhookDeliveryOutput

    def get_queryset(self):
        return WebhookDelivery.objects.select_related("webhook").order_by("-created_at", "-pk")

    @extend_schema(operation_id="webhooks_deliveries_retrieve")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
