"""Monitoring writes: a channel's audit sample, drift alerts (raised once), acknowledging
them, and the retraining flow (new dataset version + training run from the live version)."""

import logging
import smtplib
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from core.audit import audit_append
from core.lifecycle import transition
from core.permissions import can, require
from datasets_app.services import dataset_version_build
from governance.errors import GovernanceForbidden, InvalidGovernanceRequest
from governance.models import Channel
from monitoring.models import ChannelMonitoring, DriftAlert
from monitoring.selectors import DRIFT_METRICS, drift_status
from monitoring.services.webhooks import webhook_event_emit
from reviews.models import Output, Queue, RoutingRule
from reviews.services import routing_rule_save
from training_app.errors import TransitionRefused
from training_app.models import ModelVersion, TrainingRun
from training_app.services.runs import training_run_check, training_run_create
from training_app.training.recipe import SCHEDULE_FIELDS

logger = logging.getLogger(__name__)

log = logging.getLogger(__name__)


def can_retrain(user: AbstractBaseUser) -> bool:
    return can(user, "monitoring.retrain")


# -- the audit sample ------------------------------------------------------------------------


def channel_monitoring_save(
    *,
    user: AbstractBaseUser,
    channel: Channel,
    audit_sample_rate: float,
    audit_queue: Queue | None = None,
    margin: float | None = None,
    min_samples: int | None = None,
    baseline: dict[str, float] | None = None,
) -> ChannelMonitoring:
    """Set how much of a channel's live traffic goes to review, and its drift thresholds.

    Writes two routing rules, first in the order: a sample of `channel:<name>` outputs to the
    audit queue, the rest auto-accepted."""
    require(user, "monitoring.configure", GovernanceForbidden("Only admins configure monitoring."))
    if (
        isinstance(audit_sample_rate, bool)
        or not isinstance(audit_sample_rate, (int, float))
        or not 0 <= audit_sample_rate <= 1
    ):
        raise InvalidGovernanceRequest("A rate from 0 to 1.", field="audit_sample_rate")
    if margin is not None and (isinstance(margin, bool) or not 0 <= margin <= 1):
        raise InvalidGovernanceRequest("A margin from 0 to 1.", field="margin")
    if min_samples is not None and (isinstance(min_samples, bool) or not min_samples >= 1):
        raise InvalidGovernanceRequest("At least 1.", field="min_samples")
    baseline = baseline or {}
    if not isinstance(baseline, dict):
        raise InvalidGovernanceRequest("{correction|rejection: rate}.", field="baseline")
    for key, value in baseline.items():
        if key not in DRIFT_METRICS:
            raise InvalidGovernanceRequest(f"Unknown metric {key!r}.", field=f"baseline.{key}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InvalidGovernanceRequest("A rate from 0 to 1.", field=f"baseline.{key}")
    if audit_queue is None:
        from reviews.services import default_queue

        audit_queue = default_queue()
    if audit_queue.kind != Queue.Kind.REVIEW:
        raise InvalidGovernanceRequest("A review queue.", field="audit_queue")
    source = f"channel:{channel.name}"
    with transaction.atomic():
        setting, _ = ChannelMonitoring.objects.select_for_update().get_or_create(channel=channel)
        audit_rule = routing_rule_save(
            user=user,
            rule=setting.audit_rule,
            name=f"channel-audit:{channel.name}"[:100],
            position=-1000,
            action=RoutingRule.Action.ROUTE,
            queue=audit_queue,
            source=source,
            sample_rate=float(audit_sample_rate),
        )
        accept_rule = routing_rule_save(
            user=user,
            rule=setting.accept_rule,
            name=f"channel-accept:{channel.name}"[:100],
            position=-999,
            action=RoutingRule.Action.AUTO_ACCEPT,
            queue=None,
            source=source,
        )
        setting.audit_sample_rate = float(audit_sample_rate)
        setting.audit_queue = audit_queue
        setting.audit_rule, setting.accept_rule = audit_rule, accept_rule
        setting.margin, setting.min_samples = margin, min_samples
        setting.baseline = {k: float(v) for k, v in baseline.items()}
        setting.save()
        audit_append(
            actor=user,
            action="monitoring.configured",
            object_type="channel",
            object_id=channel.name,
            payload={
                "audit_sample_rate": setting.audit_sample_rate,
                "audit_queue": audit_queue.name,
                "margin": margin,
                "min_samples": min_samples,
                "baseline": setting.baseline,
            },
        )
    return setting


# -- drift alerts ------------------------------------------------------------------------------


def _alert_data(alert: DriftAlert) -> dict[str, Any]:
    return {
        "alert": alert.pk,
        "version": str(alert.version_id),
        "version_name": alert.version.name,
        "channel": alert.channel.name,
        "metric": alert.metric,
        "observed": alert.observed,
        "ci_low": alert.ci_low,
        "ci_high": alert.ci_high,
        "baseline": alert.baseline,
        "baseline_source": alert.baseline_source,
        "margin": alert.margin,
        "samples": alert.samples,
    }


def _mail(alert: DriftAlert) -> None:
    to = settings.SIGNOFF_MONITORING["ALERT_EMAILS"]
    if not to:
        return
    data = _alert_data(alert)
    try:
        _send_alert_mail(alert, data, to)
    except (smtplib.SMTPException, OSError) as exc:
        # The alert is stored, audited, on the page and in the webhooks; a mail server that
        # is down must not turn whoever ran the check into an error.
        logger.warning("drift alert %s: e-mail not sent: %s", alert.pk, exc)


def _send_alert_mail(alert: DriftAlert, data: dict[str, Any], to: Any) -> None:
    send_mail(
        subject=f"[Signoff] {alert.metric} drift: {alert.version.name} on {alert.channel.name}",
        message=(
            f"The {alert.metric} rate of {alert.version.name} on {alert.channel.name} is "
            f"{data['observed']:.1%} (95% CI {data['ci_low']:.1%}-{data['ci_high']:.1%}) over "
            f"{data['samples']} reviewed answers; its baseline ({data['baseline_source']}) is "
            f"{data['baseline']:.1%} and the margin {data['margin']:.1%}."
        ),
        from_email=None,
        recipient_list=list(to),
        fail_silently=False,
    )


def drift_check(
    *, version: ModelVersion, channel: Channel, now: datetime | None = None
) -> list[DriftAlert]:
    """Raise the alerts the current window calls for and that were never raised; return the
    new ones. Safe to call on every request: the unique constraint makes a second raise of
    the same (version, channel, metric) a no-op, even from two processes at once."""
    status = drift_status(version=version, channel=channel, now=now)
    drifted = [m for m in DRIFT_METRICS if status["metrics"][m]["drifted"]]
    if not drifted:
        return []
    existing = set(
        DriftAlert.objects.filter(version=version, channel=channel).values_list("metric", flat=True)
    )
    raised = []
    for metric in drifted:
        if metric in existing:
            continue
        figures = status["metrics"][metric]
        try:
            with transaction.atomic():
                alert = DriftAlert.objects.create(
                    version=version,
                    channel=channel,
                    metric=metric,
                    baseline=figures["baseline"],
                    baseline_source=figures["baseline_source"],
                    observed=figures["rate"],
                    ci_low=figures["ci_low"],
                    ci_high=figures["ci_high"],
                    margin=status["margin"],
                    samples=status["samples"],
                    window_start=datetime.fromisoformat(status["window_start"]),
                )
                data = _alert_data(alert)
                webhook_event_emit(event="drift.alert", payload=data)
                audit_append(
                    actor=None,
                    action="monitoring.drift_alert",
                    object_type="model_version",
                    object_id=version.pk,
                    payload=data,
                )
        except IntegrityError:
            # Someone else raised it between our read and our insert: theirs stands.
            continue
        raised.append(alert)
        transaction.on_commit(lambda alert=alert: _mail(alert))
    return raised


def drift_check_all(*, now: datetime | None = None) -> list[DriftAlert]:
    raised = []
    for channel in Channel.objects.filter(live_version__isnull=False).select_related(
        "live_version"
    ):
        raised += drift_check(version=channel.live_version, channel=channel, now=now)
    return raised


def drift_alert_acknowledge(*, user: AbstractBaseUser, alert: DriftAlert) -> DriftAlert:
    require(
        user,
        "monitoring.acknowledge",
        GovernanceForbidden("Only ML engineers and admins acknowledge alerts."),
    )
    with transaction.atomic():
        # Its audit event is the monitoring one below (on the model version), not drift_alert.*.
        transition(
            alert,
            DriftAlert.Status.ACKNOWLEDGED,
            frm=DriftAlert.Status.OPEN,
            refused=lambda frm, to: TransitionRefused(f"Alert {alert.pk} is already acknowledged."),
            changed=lambda frm: TransitionRefused(f"Alert {alert.pk} is already acknowledged."),
            fields={"acknowledged_by": user},
            touch=("acknowledged_at",),
        )
        audit_append(
            actor=user,
            action="monitoring.drift_alert_acknowledged",
            object_type="model_version",
            object_id=alert.version_id,
            payload={"alert": alert.pk, "channel": alert.channel.name, "metric": alert.metric},
        )
    alert.refresh_from_db()
    return alert


# -- retraining --------------------------------------------------------------------------------


def retraining_plan(*, version: ModelVersion) -> dict[str, Any]:
    """What a retraining from `version` would use: its dataset's settings widened to the
    version's live answers, and how many corrections came in since that dataset was built."""
    old = version.dataset_version
    since = old.built_at or old.created_at
    options = {k: v for k, v in (old.settings or {}).items()}
    channels = sorted(
        set(Channel.objects.filter(live_version=version).values_list("name", flat=True))
        | {
            s.removeprefix("channel:")
            for s in Output.objects.filter(
                model_version=version.name, source__startswith="channel:"
            )
            .values_list("source", flat=True)
            .distinct()
            .order_by()
        }
    )
    # The old filters chose the old data; the live answers must pass them too.
    if options.get("sources"):
        options["sources"] = sorted(set(options["sources"]) | {f"channel:{c}" for c in channels})
    if options.get("queues"):
        audit_queues = ChannelMonitoring.objects.filter(
            channel__name__in=channels, audit_queue__isnull=False
        ).values_list("audit_queue__name", flat=True)
        options["queues"] = sorted(set(options["queues"]) | set(audit_queues))
    for key in ("model_name", "model_version", "resolved_to"):
        options.pop(key, None)
    if options.get("tokenizer_path") and not _exists(options["tokenizer_path"]):
        options.pop("tokenizer_path")
    corrections = Output.objects.filter(
        model_version=version.name,
        status=Output.Status.RESOLVED,
        resolution=Output.Resolution.CORRECTED,
        resolved_at__gt=since,
    )
    return {
        "version": version,
        "dataset": old,
        "since": since,
        "channels": channels,
        "new_corrections": corrections.count(),
        "options": options,
    }


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def inherited_hyperparameters(*, version: ModelVersion) -> dict[str, Any]:
    """What a retraining run takes over from the live version: its hyperparameters, except the
    schedule fields the recipe fitted to that version's data. The new dataset is larger, and
    its schedule is fitted to it in turn; what the version's launcher chose stays chosen. A
    version trained before the recipe was applied records no recipe: everything carries over."""
    given = dict(version.config.get("hyperparameters", {}))
    recipe = version.config.get("recipe")
    if not recipe:
        return given
    explicit = set(recipe.get("explicit", ()))
    return {k: v for k, v in given.items() if k not in SCHEDULE_FIELDS or k in explicit}


def retraining_start(
    *,
    user: AbstractBaseUser,
    version: ModelVersion,
    alert: DriftAlert | None = None,
    name: str = "",
    hyperparameters: dict[str, Any] | None = None,
    enqueue: bool = True,
) -> TrainingRun:
    """Build the next dataset version (parent: the live version's) and launch a training run
    continuing the live version. The new version then goes through the normal sign-off."""
    if not can_retrain(user):
        raise GovernanceForbidden("Only ML engineers and admins start retraining.")
    version = ModelVersion.objects.select_related("dataset_version").get(pk=version.pk)
    if version.status != ModelVersion.Status.DEPLOYED:
        raise TransitionRefused(
            f"{version.name} is {version.status}: retraining starts from a live version."
        )
    if alert is not None and alert.version_id != version.pk:
        raise InvalidGovernanceRequest("That alert is about another version.", field="alert")
    if hyperparameters is not None and not isinstance(hyperparameters, dict):
        raise InvalidGovernanceRequest("An object.", field="hyperparameters")
    plan = retraining_plan(version=version)
    if plan["new_corrections"] == 0:
        raise TransitionRefused(
            f"No corrections of {version.name}'s answers since its dataset was built: "
            "nothing new to learn from."
        )
    if not hyperparameters:
        hyperparameters = inherited_hyperparameters(version=version)
    # Everything the run will check, checked before the slow build, so a refused request
    # leaves no dataset version (and no locked outputs) behind.
    training_run_check(
        user=user,
        dataset_version=None,
        parent_version=version,
        hyperparameters=hyperparameters,
        name=name,
    )
    # The build owns its transaction (and may take a while): it runs before ours.
    dataset = dataset_version_build(
        user=user, name=plan["dataset"].name, parent=plan["dataset"], **plan["options"]
    )
    with transaction.atomic():
        run = training_run_create(
            user=user,
            dataset_version=dataset,
            parent_version=version,
            hyperparameters=hyperparameters,
            name=name,
            enqueue=enqueue,
        )
        if alert is not None:
            DriftAlert.objects.filter(pk=alert.pk).update(retrain_run=run)
        audit_append(
            actor=user,
            action="monitoring.retrain",
            object_type="model_version",
            object_id=version.pk,
            payload={
                "training_run": str(run.pk),
                "dataset_version": dataset.pk,
                "parent_dataset_version": plan["dataset"].pk,
                "new_corrections": plan["new_corrections"],
                "alert": alert.pk if alert else None,
            },
        )
    return run
