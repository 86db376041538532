"""Monitoring pages: live versions' review figures with plots, drift alerts, the retraining
flow, and (admins only) webhooks and their delivery log. Same services as the API."""

from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST, require_safe

from core.errors import ApplicationError
from core.permissions import permission_required_for_page
from monitoring.models import DriftAlert, Webhook, WebhookDelivery
from monitoring.selectors import overview_figures, version_figures
from monitoring.services.drift import (
    can_retrain,
    drift_alert_acknowledge,
    retraining_plan,
    retraining_start,
)
from monitoring.services.webhooks import EVENTS, webhook_save
from training_app.charts import COLOURS
from training_app.errors import ModelVersionNotFound
from training_app.selectors import can_view_training, model_version_get

PLOTTED = ("correction", "rejection", "approval", "escalation")


def rate_chart(
    buckets: list[dict], *, metric: str, baseline: float | None, width: int = 560, height: int = 180
) -> SafeString:
    """One rate over time: the point estimate, its 95 % Wilson band, and the baseline."""
    if not buckets:
        return mark_safe('<p class="muted">No reviewed answers yet.</p>')
    pad_l, pad_r, pad_t, pad_b = 40, 12, 16, 30
    n = len(buckets)
    colour = COLOURS[PLOTTED.index(metric) % len(COLOURS)]

    def sx(i: int) -> float:
        return pad_l + (i / (n - 1) if n > 1 else 0.5) * (width - pad_l - pad_r)

    def sy(y: float) -> float:
        return pad_t + (1 - y) * (height - pad_t - pad_b)

    values = [b[metric] for b in buckets]
    title = f"{metric} rate per bucket with 95% Wilson interval" + (
        f", baseline {baseline:.1%}" if baseline is not None else ""
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" '
        f'height="{height - pad_t - pad_b}" fill="none" stroke="#d0d7de"/>',
        f'<text x="4" y="{pad_t + 10}" font-size="11">100%</text>',
        f'<text x="4" y="{height - pad_b}" font-size="11">0%</text>',
        f'<text x="{pad_l}" y="{height - 8}" font-size="11">{escape(buckets[0]["start"][:10])}'
        "</text>",
        f'<text x="{width - pad_r - 70}" y="{height - 8}" font-size="11">'
        f"{escape(buckets[-1]['start'][:10])}</text>",
    ]
    upper = " ".join(f"{sx(i):.1f},{sy(v['ci_high']):.1f}" for i, v in enumerate(values))
    lower = " ".join(
        f"{sx(i):.1f},{sy(v['ci_low']):.1f}" for i, v in reversed(list(enumerate(values)))
    )
    parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15"/>')
    if baseline is not None:
        y = sy(baseline)
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#57606a" stroke-dasharray="4 3"/>'
        )
    points = " ".join(f"{sx(i):.1f},{sy(v['rate'] or 0):.1f}" for i, v in enumerate(values))
    if n > 1:
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
    for i, (bucket, value) in enumerate(zip(buckets, values, strict=True)):
        parts.append(
            f'<circle cx="{sx(i):.1f}" cy="{sy(value["rate"] or 0):.1f}" r="3" fill="{colour}">'
            f"<title>{escape(bucket['start'][:10])}: {value['count']}/{bucket['reviewed']} "
            f"({(value['rate'] or 0):.1%}, CI {value['ci_low']:.1%}-{value['ci_high']:.1%})"
            "</title></circle>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _charts(block: dict) -> list[tuple[str, SafeString]]:
    drift = block.get("drift") or {}
    predicted = block.get("predicted") or {}
    out = []
    for metric in PLOTTED:
        baseline = (drift.get("metrics") or {}).get(metric, {}).get("baseline")
        if baseline is None:
            baseline = predicted.get(metric)
        out.append((metric, rate_chart(block["buckets"], metric=metric, baseline=baseline)))
    return out


def _viewer(request) -> None:
    if not can_view_training(request.user):
        raise PermissionDenied(
            "Monitoring is for ML engineers, approvers, deployers, auditors and admins."
        )


def _bucket(request) -> str:
    return "week" if request.GET.get("bucket") == "week" else "day"


@login_required
@require_safe
def overview(request):
    _viewer(request)
    bucket = _bucket(request)
    channels = overview_figures(bucket=bucket)
    for block in channels:
        block["charts"] = _charts(block)
    return render(
        request,
        "training_app/monitoring.html",
        {
            "channels": channels,
            "bucket": bucket,
            "alerts": DriftAlert.objects.filter(status="open").select_related("version", "channel"),
            "can_retrain": can_retrain(request.user),
        },
    )


@login_required
@require_safe
def version_monitoring(request, version_id):
    _viewer(request)
    try:
        version = model_version_get(version_id=version_id)
    except ModelVersionNotFound as exc:
        raise Http404(exc.message) from exc
    bucket = _bucket(request)
    figures = version_figures(version=version, bucket=bucket)
    for block in figures["channels"]:
        block["predicted"] = figures["predicted"]
        block["charts"] = _charts(block)
    return render(
        request,
        "training_app/monitoring_version.html",
        {
            "version": version,
            "figures": figures,
            "bucket": bucket,
            "alerts": version.drift_alerts.select_related("channel", "retrain_run"),
            "can_retrain": can_retrain(request.user) and version.status == "deployed",
        },
    )


@login_required
@permission_required_for_page(
    "monitoring.retrain", "Only ML engineers and admins start retraining."
)
def retrain(request, version_id):
    """The guided flow: what the new dataset will hold, then build + launch in one step."""
    try:
        version = model_version_get(version_id=version_id)
    except ModelVersionNotFound as exc:
        raise Http404(exc.message) from exc
    alert = None
    alert_id = request.POST.get("alert") or request.GET.get("alert")
    if alert_id:
        alert = DriftAlert.objects.filter(pk=alert_id if str(alert_id).isdigit() else 0).first()
    if request.method == "POST":
        try:
            run = retraining_start(
                user=request.user,
                version=version,
                alert=alert,
                name=request.POST.get("name", ""),
            )
        except ApplicationError as exc:
            if exc.status_code == 403:
                raise PermissionDenied(exc.message) from exc
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"Dataset version {run.dataset_version_id} built; training "
                f"{run.model_version.name} from {version.name}. When it is evaluated, put it "
                "forward for sign-off.",
            )
            return redirect("training:run", run_id=run.pk)
    return render(
        request,
        "training_app/monitoring_retrain.html",
        {"version": version, "plan": retraining_plan(version=version), "alert": alert},
    )


@login_required
@require_POST
def alert_acknowledge(request, pk):
    alert = get_object_or_404(DriftAlert, pk=pk)
    try:
        drift_alert_acknowledge(user=request.user, alert=alert)
    except ApplicationError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.message) from exc
        messages.error(request, exc.message)
    return redirect("training:monitoring")


@login_required
@permission_required_for_page("webhooks.configure", "Webhooks are for admins.")
def webhooks(request):
    created = None
    if request.method == "POST":
        try:
            created = webhook_save(
                user=request.user,
                name=request.POST.get("name", ""),
                url=request.POST.get("url", ""),
                events=request.POST.getlist("events"),
            )
        except ApplicationError as exc:
            messages.error(request, f"{exc.field or ''}: {exc.message}".lstrip(": "))
    return render(
        request,
        "training_app/monitoring_webhooks.html",
        {
            "hooks": Webhook.objects.all(),
            "events": EVENTS,
            "created": created,
            "deliveries": WebhookDelivery.objects.select_related("webhook")[:100],
            "now": datetime.now(),
        },
    )
