"""Monitoring API: figures per version and channel, drift alerts, the audit sample, the
retraining trigger and webhooks. One view per operation: validate -> call a service."""

from datetime import datetime

from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed
from core.errors import NotFound
from governance.errors import InvalidGovernanceRequest
from governance.selectors import channel_get
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


def alert_data(alert: DriftAlert) -> dict:
    return {
        "id": alert.pk,
        "version": str(alert.version_id),
        "version_name": alert.version.name,
        "channel": alert.channel.name,
        "metric": alert.metric,
        "status": alert.status,
        "observed": alert.observed,
        "ci_low": alert.ci_low,
        "ci_high": alert.ci_high,
        "baseline": alert.baseline,
        "baseline_source": alert.baseline_source,
        "margin": alert.margin,
        "samples": alert.samples,
        "raised_at": alert.raised_at.isoformat(),
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "retrain_run": str(alert.retrain_run_id) if alert.retrain_run_id else None,
    }


def alerts_list():
    return DriftAlert.objects.select_related("version", "channel", "acknowledged_by")


class MonitoringOverviewApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(parameters=FIGURE_PARAMS, responses=dict)
    def get(self, request):
        bucket, since = figure_params(request.query_params)
        return Response(
            {
                "channels": overview_figures(bucket=bucket, since=since),
                "open_alerts": [alert_data(a) for a in alerts_list().filter(status="open")],
            }
        )


class VersionMonitoringApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(parameters=FIGURE_PARAMS, responses=dict)
    def get(self, request, version_id):
        bucket, since = figure_params(request.query_params)
        version = model_version_get(version_id=version_id)
        figures = version_figures(version=version, bucket=bucket, since=since)
        figures["alerts"] = [alert_data(a) for a in alerts_list().filter(version=version)]
        return Response(figures)


class DriftAlertListApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=list(DriftAlert.Status.values))],
        responses=dict,
    )
    def get(self, request):
        alerts = alerts_list()
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in DriftAlert.Status.values:
                raise InvalidGovernanceRequest("open or acknowledged.", field="status")
            alerts = alerts.filter(status=wanted)
        return Response([alert_data(a) for a in alerts])


def _alert(pk: int) -> DriftAlert:
    alert = alerts_list().filter(pk=pk).first()
    if alert is None:
        raise NotFound(f"No drift alert {pk}.")
    return alert


class DriftAlertAcknowledgeApi(APIView):
    permission_classes = [allowed("monitoring.acknowledge")]

    @extend_schema(request=None, responses=dict)
    def post(self, request, pk):
        return Response(alert_data(drift_alert_acknowledge(user=request.user, alert=_alert(pk))))


class MonitoringSettingsInput(serializers.Serializer):
    audit_sample_rate = serializers.FloatField(min_value=0, max_value=1)
    audit_queue = serializers.CharField(required=False, allow_blank=True, default="")
    margin = serializers.FloatField(required=False, allow_null=True, default=None)
    min_samples = serializers.IntegerField(required=False, allow_null=True, default=None)
    baseline = serializers.DictField(child=serializers.FloatField(), required=False, default=dict)


class ChannelMonitoringApi(APIView):
    permission_classes = [allowed("monitoring.configure")]

    @extend_schema(request=MonitoringSettingsInput, responses=dict)
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
        return Response(
            {
                "channel": name,
                "audit_sample_rate": setting.audit_sample_rate,
                "audit_queue": setting.audit_queue.name if setting.audit_queue else None,
                "margin": setting.margin,
                "min_samples": setting.min_samples,
                "baseline": setting.baseline,
                "routing_rules": [setting.audit_rule_id, setting.accept_rule_id],
            }
        )


class RetrainInput(serializers.Serializer):
    alert = serializers.IntegerField(required=False, allow_null=True, default=None)
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    hyperparameters = serializers.DictField(required=False, allow_null=True, default=None)


class RetrainApi(APIView):
    permission_classes = [allowed("monitoring.retrain")]

    @extend_schema(request=RetrainInput, responses={201: dict})
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
            {
                "training_run": str(run.pk),
                "model_version": str(run.model_version.pk),
                "model_version_name": run.model_version.name,
                "parent_version": str(version.pk),
                "dataset_version": run.dataset_version_id,
            },
            status=status.HTTP_201_CREATED,
        )


class WebhookInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    url = serializers.CharField(max_length=500)
    events = serializers.ListField(child=serializers.CharField(max_length=64))
    is_active = serializers.BooleanField(required=False, default=True)
    secret = serializers.CharField(required=False, allow_blank=True, default="", max_length=128)


def webhook_data(hook: Webhook, *, with_secret: bool = False) -> dict:
    data = {
        "id": hook.pk,
        "name": hook.name,
        "url": hook.url,
        "events": hook.events,
        "is_active": hook.is_active,
        "created_at": hook.created_at.isoformat(),
    }
    if with_secret:
        data["secret"] = hook.secret
    return data


def delivery_data(d: WebhookDelivery) -> dict:
    return {
        "id": str(d.pk),
        "webhook": d.webhook.name,
        "event": d.event,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.isoformat(),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "log": d.log,
        "created_at": d.created_at.isoformat(),
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
    }


class WebhookListCreateApi(APIView):
    permission_classes = [allowed("webhooks.configure")]

    @extend_schema(responses=dict)
    def get(self, request):
        return Response([webhook_data(h) for h in Webhook.objects.all()])

    @extend_schema(request=WebhookInput, responses={201: dict})
    def post(self, request):
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        hook = webhook_save(user=request.user, **data.validated_data)
        # The secret is shown once, to the admin who made it (and in the admin pages).
        return Response(webhook_data(hook, with_secret=True), status=status.HTTP_201_CREATED)


class WebhookDeliveryListApi(APIView):
    permission_classes = [allowed("webhooks.configure")]

    @extend_schema(responses=dict)
    def get(self, request):
        rows = WebhookDelivery.objects.select_related("webhook")[:200]
        return Response([delivery_data(d) for d in rows])
