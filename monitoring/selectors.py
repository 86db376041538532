"""Monitoring after release: how review judges a version's live answers, over time.

Reads only (the writes are in services/monitoring.py). A version's live answers are the
outputs naming it (`Output.model_version` = the version's name: the channel's generate API
records them so, and an external serving stack posts them so); a channel's are those with
`source = channel:<name>`. A reviewed output counts in the bucket of the moment review
finished with it (resolved, or escalated and still with the leads)."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Coalesce, TruncDay, TruncWeek
from django.utils import timezone

from governance.models import Channel
from monitoring.models import ChannelMonitoring
from reviews.models import Output
from training_app.models import Evaluation, ModelVersion

RATES = ("approval", "correction", "rejection", "escalation")
DRIFT_METRICS = ("correction", "rejection")
BUCKETS = {"day": TruncDay, "week": TruncWeek}
Z95 = 1.959963984540054


def conf(key: str) -> Any:
    return settings.SIGNOFF_MONITORING[key]


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no sample.

    Chosen over the normal approximation because review samples are small and rates near 0
    or 1 are common (the normal interval then leaves [0, 1] or collapses to a point)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError("successes must be between 0 and n")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(successes: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(successes, n)
    return {
        "count": successes,
        "rate": round(successes / n, 6) if n else None,
        "ci_low": round(low, 6),
        "ci_high": round(high, 6),
    }


@dataclass(frozen=True)
class Counts:
    n: int = 0
    approved: int = 0
    corrected: int = 0
    rejected: int = 0
    escalated: int = 0

    def rates(self) -> dict[str, dict[str, Any]]:
        return {
            "approval": rate(self.approved, self.n),
            "correction": rate(self.corrected, self.n),
            "rejection": rate(self.rejected, self.n),
            "escalation": rate(self.escalated, self.n),
        }


def _reviewed(outputs: QuerySet[Output]) -> QuerySet[Output]:
    """Outputs people finished with (auto-accepted ones are not reviewed)."""
    return outputs.filter(
        Q(status=Output.Status.RESOLVED) | Q(status=Output.Status.ESCALATED)
    ).exclude(resolved_by=Output.ResolvedBy.ROUTING)


def _count_kwargs() -> dict[str, Any]:
    return {
        "n": Count("id"),
        "approved": Count("id", filter=Q(status="resolved", resolution="approved")),
        "corrected": Count("id", filter=Q(status="resolved", resolution="corrected")),
        "rejected": Count("id", filter=Q(status="resolved", resolution="rejected")),
        "escalated": Count("id", filter=Q(escalated_at__isnull=False)),
    }


def outputs_for(*, version: ModelVersion | None = None, channel: Channel | None = None):
    outputs = Output.objects.all()
    if version is not None:
        outputs = outputs.filter(model_version=version.name)
    if channel is not None:
        outputs = outputs.filter(source=f"channel:{channel.name}")
    return outputs


def counts_between(outputs: QuerySet[Output], start: datetime | None, end: datetime | None):
    reviewed = _reviewed(outputs).annotate(done_at=Coalesce("resolved_at", "escalated_at"))
    if start is not None:
        reviewed = reviewed.filter(done_at__gte=start)
    if end is not None:
        reviewed = reviewed.filter(done_at__lt=end)
    return Counts(**reviewed.aggregate(**_count_kwargs()))


def bucket_counts(outputs: QuerySet[Output], *, bucket: str, since: datetime | None):
    """[(bucket start, Counts)] oldest first, one row per bucket with reviews."""
    trunc = BUCKETS[bucket]
    reviewed = _reviewed(outputs).annotate(done_at=Coalesce("resolved_at", "escalated_at"))
    if since is not None:
        reviewed = reviewed.filter(done_at__gte=since)
    rows = (
        reviewed.annotate(bucket=trunc("done_at", tzinfo=UTC))
        .values("bucket")
        .annotate(**_count_kwargs())
        .order_by("bucket")
    )
    return [(row.pop("bucket"), Counts(**row)) for row in rows]


def predicted(version: ModelVersion) -> dict[str, Any]:
    """What the version's evaluation predicts review will find.

    Review approves an answer unchanged when it is right, so the evaluation's exact-match
    share on the eval split is the predicted approval rate and its complement the predicted
    correction rate. The evaluation says nothing about rejections."""
    evaluation = (
        Evaluation.objects.filter(version=version, status="done", split="eval")
        .order_by("-finished_at", "-created_at")
        .first()
    )
    exact = None
    if evaluation is not None:
        exact = (evaluation.metrics.get("candidate") or {}).get("exact_match")
    if exact is None:
        exact = (version.metrics or {}).get("exact_match")
    if not isinstance(exact, (int, float)):
        return {"approval": None, "correction": None, "rejection": None, "source": None}
    return {
        "approval": round(float(exact), 6),
        "correction": round(1 - float(exact), 6),
        "rejection": None,
        "source": f"evaluation {evaluation.pk}" if evaluation else "version metrics",
    }


def thresholds(channel: Channel | None) -> dict[str, Any]:
    setting = ChannelMonitoring.objects.filter(channel=channel).first() if channel else None
    margin = setting.margin if setting and setting.margin is not None else conf("MARGIN")
    min_samples = (
        setting.min_samples if setting and setting.min_samples is not None else conf("MIN_SAMPLES")
    )
    return {
        "margin": float(margin),
        "min_samples": int(min_samples),
        "window_days": int(conf("WINDOW_DAYS")),
        "overrides": dict(setting.baseline) if setting else {},
        "audit_sample_rate": setting.audit_sample_rate if setting else None,
    }


def baseline_for(
    *, version: ModelVersion, metric: str, limits: dict[str, Any], prediction: dict[str, Any]
) -> tuple[float, str]:
    """The rate a metric is compared with: the channel's override, else the evaluation's
    prediction, else the configured default."""
    if metric in limits["overrides"]:
        return float(limits["overrides"][metric]), "channel"
    if prediction.get(metric) is not None:
        return float(prediction[metric]), "evaluation"
    return float(conf("DEFAULT_BASELINE")[metric]), "default"


def drift_status(
    *, version: ModelVersion, channel: Channel, now: datetime | None = None
) -> dict[str, Any]:
    """The current window against the baselines: which metrics drifted, with the numbers."""
    now = now or timezone.now()
    limits = thresholds(channel)
    start = now - timedelta(days=limits["window_days"])
    window = counts_between(outputs_for(version=version, channel=channel), start, None)
    prediction = predicted(version)
    metrics = {}
    rates = window.rates()
    for metric in DRIFT_METRICS:
        baseline, source = baseline_for(
            version=version, metric=metric, limits=limits, prediction=prediction
        )
        observed = rates[metric]
        enough = window.n >= limits["min_samples"]
        drifted = (
            enough
            and observed["rate"] is not None
            and observed["rate"] > baseline + limits["margin"]
        )
        metrics[metric] = {
            **observed,
            "baseline": round(baseline, 6),
            "baseline_source": source,
            "threshold": round(baseline + limits["margin"], 6),
            "enough_samples": enough,
            "drifted": bool(drifted),
        }
    return {
        "window_start": start.isoformat(),
        "window_days": limits["window_days"],
        "samples": window.n,
        "min_samples": limits["min_samples"],
        "margin": limits["margin"],
        "metrics": metrics,
    }


def _series(outputs: QuerySet[Output], *, bucket: str, since: datetime | None) -> list[dict]:
    return [
        {"start": start.isoformat(), "reviewed": counts.n, **counts.rates()}
        for start, counts in bucket_counts(outputs, bucket=bucket, since=since)
    ]


def version_figures(
    *, version: ModelVersion, bucket: str = "day", since: datetime | None = None
) -> dict[str, Any]:
    """Everything the page, the API and the command show for one version."""
    outputs = outputs_for(version=version)
    total = counts_between(outputs, since, None)
    channels = list(Channel.objects.filter(live_version=version).order_by("name"))
    served = {c.pk for c in channels}
    # Channels that served it before (rolled back or replaced) still have figures.
    for name in (
        outputs.filter(source__startswith="channel:")
        .values_list("source", flat=True)
        .distinct()
        .order_by()
    ):
        extra = Channel.objects.filter(name=name.removeprefix("channel:")).first()
        if extra is not None and extra.pk not in served:
            channels.append(extra)
            served.add(extra.pk)
    per_channel = []
    for channel in channels:
        channel_outputs = outputs_for(version=version, channel=channel)
        per_channel.append(
            {
                "channel": channel.name,
                "live": channel.live_version_id == version.pk,
                "traffic": channel_outputs.count(),
                "reviewed": counts_between(channel_outputs, since, None).n,
                "rates": counts_between(channel_outputs, since, None).rates(),
                "buckets": _series(channel_outputs, bucket=bucket, since=since),
                "drift": drift_status(version=version, channel=channel)
                if channel.live_version_id == version.pk
                else None,
            }
        )
    return {
        "version": {"id": str(version.pk), "name": version.name, "status": version.status},
        "bucket": bucket,
        "since": since.isoformat() if since else None,
        "traffic": outputs.count(),
        "reviewed": total.n,
        "rates": total.rates(),
        "predicted": predicted(version),
        "buckets": _series(outputs, bucket=bucket, since=since),
        "channels": per_channel,
    }


def overview_figures(*, bucket: str = "day", since: datetime | None = None) -> list[dict]:
    """One entry per channel with a live version."""
    live = Channel.objects.filter(live_version__isnull=False).select_related("live_version")
    return [
        {
            "channel": channel.name,
            "version": {"id": str(channel.live_version_id), "name": channel.live_version.name},
            **_channel_block(channel, bucket=bucket, since=since),
        }
        for channel in live.order_by("name")
    ]


def _channel_block(channel: Channel, *, bucket: str, since: datetime | None) -> dict[str, Any]:
    version = channel.live_version
    outputs = outputs_for(version=version, channel=channel)
    total = counts_between(outputs, since, None)
    return {
        "traffic": outputs.count(),
        "reviewed": total.n,
        "rates": total.rates(),
        "predicted": predicted(version),
        "buckets": _series(outputs, bucket=bucket, since=since),
        "drift": drift_status(version=version, channel=channel),
        "audit_sample_rate": thresholds(channel)["audit_sample_rate"],
    }
