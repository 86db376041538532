"""Evaluation of a model version against its parent (or the bare base model), as a job.

Leased like a training run (owner + heartbeat + attempts, `core.jobs` with `EVALUATION_JOB`): a
duplicate delivery does nothing, the sweep takes back an evaluation whose worker died and fails
it after MAX_ATTEMPTS, and sends again the message of a queued one that the broker lost."""

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from config.dramatiq import send_after_commit
from core.audit import audit_append
from core.jobs import (
    JobSpec,
    LeaseHeartbeat,
    gave_up_reason,
    lost_messages_resend,
    stale_leases_sweep,
)
from core.lifecycle import transition
from datasets_app.selectors import dataset_version_rows
from training_app.errors import TransitionRefused
from training_app.models import Evaluation, ModelVersion
from training_app.services import leases
from training_app.services.versions import model_version_loadable_adapter, model_version_transition

logger = logging.getLogger(__name__)

EVALUABLE = {
    ModelVersion.Status.TRAINED,
    ModelVersion.Status.EVALUATED,
    ModelVersion.Status.AWAITING_SIGNOFF,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.DEPLOYED,
}


def evaluation_request(
    *,
    user: AbstractBaseUser | None,
    version: ModelVersion,
    reference: ModelVersion | None = None,
    enqueue: bool = True,
    split: str = "eval",
    channel: Any = None,
    signoff_request: Any = None,
    use_parent: bool = True,
) -> Evaluation:
    """Queue an evaluation of `version` against `reference` (default: its parent, else the
    bare base model) on its dataset version's eval split, or on `channel`'s regression set
    (split "regression")."""
    if version.status not in EVALUABLE:
        raise TransitionRefused(f"Model version {version.name} is {version.status}; not evaluable.")
    if split == "regression" and (channel is None or not channel.regression_cases.exists()):
        raise TransitionRefused("A regression evaluation needs a channel with a regression set.")
    if reference is None and use_parent:
        reference = version.parent
    if reference is not None and reference.base_model_id != version.base_model_id:
        raise TransitionRefused("A reference version must share the candidate's base model.")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            version=version,
            reference=reference,
            dataset_version_id=version.dataset_version_id,
            split=split,
            channel=channel,
            signoff_request=signoff_request,
            settings={
                "generation_samples": (
                    channel.regression_cases.count()
                    if split == "regression"
                    else settings.SIGNOFF_TRAINING["EVAL_GENERATION_SAMPLES"]
                ),
                "max_new_tokens": settings.SIGNOFF_TRAINING["EVAL_MAX_NEW_TOKENS"],
                "max_length": version.config.get("hyperparameters", {}).get("max_length", 256),
            },
        )
        audit_append(
            actor=user,
            action="evaluation.request",
            object_type="evaluation",
            object_id=evaluation.pk,
            payload={
                "model_version": str(version.pk),
                "reference": str(reference.pk) if reference else "base",
                "split": split,
                "channel": channel.name if channel is not None else None,
            },
        )
        if enqueue:
            _enqueue_evaluation(evaluation.pk)
    return evaluation


def _enqueue_evaluation(evaluation_id: Any) -> str:
    """Send after commit and record the message id in the caller's transaction."""
    from training_app.tasks import evaluate_model_version

    message = send_after_commit(evaluate_model_version, str(evaluation_id))
    Evaluation.objects.filter(pk=evaluation_id).update(
        message_id=message.message_id, enqueued_at=timezone.now()
    )
    return message.message_id


# Where the rows of a split that is not the dataset's own come from, by split name. Governance
# registers "regression" (a channel's regression set) in its AppConfig.ready(): evaluations
# are training's, the sets they are run on may belong to a higher app.
RowsSource = Callable[[Evaluation], Iterable[dict[str, Any]]]
_ROWS_SOURCES: dict[str, RowsSource] = {}


def evaluation_rows_source(*, split: str, rows: RowsSource) -> None:
    _ROWS_SOURCES[split] = rows


def _evaluation_rows(evaluation: Evaluation) -> Any:
    source = _ROWS_SOURCES.get(evaluation.split)
    if source is not None:
        return source(evaluation)
    return dataset_version_rows(version=evaluation.dataset_version, split=evaluation.split)


class _EvaluationLost(Exception):
    """Someone moved the evaluation first (or the sweep took the lease): the caller's move lost."""


def _eval_transition(
    evaluation: Evaluation, frm: str, to: str, owner: str | None = None, **fields: Any
) -> bool:
    """Compare-and-set of the status; with `owner`, only while that worker holds the lease.
    False when the race was lost; a move the table does not allow is a bug and raises."""
    try:
        transition(
            evaluation,
            to,
            frm=frm,
            refused=lambda frm, to: TransitionRefused(
                f"Evaluation {evaluation.pk} cannot go from {frm} to {to}."
            ),
            changed=lambda frm: _EvaluationLost(),
            where={"lease_owner": owner} if owner is not None else None,
            fields=fields,
        )
    except _EvaluationLost:
        return False
    return True


def evaluation_execute(*, evaluation_id: Any, owner: str) -> Evaluation | None:
    """Claim, run and record one evaluation; a duplicate delivery does nothing, and neither
    does a worker that lost its lease to the sweep while it was evaluating."""
    evaluation = (
        Evaluation.objects.select_related(
            "version__base_model", "reference", "dataset_version", "channel"
        )
        .filter(pk=evaluation_id)
        .first()
    )
    if evaluation is None or not _eval_transition(
        evaluation,
        Evaluation.Status.QUEUED,
        Evaluation.Status.RUNNING,
        lease_owner=owner,
        heartbeat_at=timezone.now(),
        attempts=F("attempts") + 1,
    ):
        logger.info("evaluation %s already taken or gone; delivery ignored", evaluation_id)
        return None
    heartbeat = LeaseHeartbeat(EVALUATION_JOB, evaluation.pk, owner, leases.heartbeat_seconds())
    heartbeat.start()
    try:
        return _evaluation_run(evaluation, owner)
    finally:
        heartbeat.stop()


def _evaluation_run(evaluation: Evaluation, owner: str) -> Evaluation | None:
    from training_app.training.data import write_jsonl
    from training_app.training.evaluate import EvaluationArguments
    from training_app.training.evaluate import run as run_evaluation

    version = evaluation.version
    work = Path(settings.SIGNOFF_TRAINING["RUNS_DIR"]) / "evaluations" / str(evaluation.pk)
    try:
        work.mkdir(parents=True, exist_ok=True)
        rows = write_jsonl(work / "eval.jsonl", _evaluation_rows(evaluation))
        if rows == 0:
            raise ValueError("the eval split is empty")
        candidate = model_version_loadable_adapter(version=version, into=work / "candidate")
        reference = (
            model_version_loadable_adapter(version=evaluation.reference, into=work / "reference")
            if evaluation.reference_id
            else None
        )
        result = run_evaluation(
            EvaluationArguments(
                base_model_path=version.base_model.folder,
                candidate_adapter_path=str(candidate),
                reference_adapter_path=str(reference) if reference else None,
                eval_file=str(work / "eval.jsonl"),
                max_length=evaluation.settings.get("max_length", 256),
                generation_samples=evaluation.settings.get("generation_samples", 16),
                max_new_tokens=evaluation.settings.get("max_new_tokens", 80),
                device=settings.SIGNOFF_TRAINING["DEVICE"],
            )
        )
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        with transaction.atomic():
            if not _eval_transition(
                evaluation,
                Evaluation.Status.RUNNING,
                Evaluation.Status.FAILED,
                owner=owner,
                failure_reason=reason,
                finished_at=timezone.now(),
            ):
                logger.warning("evaluation %s: lease lost by %s (%s)", evaluation.pk, owner, reason)
                return None
            audit_append(
                actor=None,
                action="evaluation.failed",
                object_type="evaluation",
                object_id=evaluation.pk,
                payload={"reason": reason},
            )
        raise
    metrics = {
        "candidate": result.candidate,
        "reference": result.reference,
        "reference_label": evaluation.reference_label,
        "examples": result.examples,
        "generated": result.generated,
        "seconds": round(result.seconds, 1),
        "device": result.device,
    }
    with transaction.atomic():
        if not _eval_transition(
            evaluation,
            Evaluation.Status.RUNNING,
            Evaluation.Status.DONE,
            owner=owner,
            metrics=metrics,
            samples=result.samples,
            finished_at=timezone.now(),
        ):
            # The sweep gave it to another worker while this one was busy: theirs counts.
            logger.warning("evaluation %s: lease lost by %s; result dropped", evaluation.pk, owner)
            return None
        audit_append(
            actor=None,
            action="evaluation.done",
            object_type="evaluation",
            object_id=evaluation.pk,
            payload={"model_version": str(version.pk), "metrics": metrics},
        )
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == ModelVersion.Status.TRAINED:
            model_version_transition(
                version=version,
                to=ModelVersion.Status.EVALUATED,
                actor=None,
                payload={"evaluation": str(evaluation.pk)},
            )
    evaluation.refresh_from_db()
    return evaluation


def _sweep_move(evaluation: Evaluation, to: str, reason: str, **fields: Any) -> bool:
    if not _eval_transition(
        evaluation, Evaluation.Status.RUNNING, to, owner=evaluation.lease_owner, **fields
    ):
        return False
    audit_append(
        actor=None,
        action=f"evaluation.{to}",
        object_type="evaluation",
        object_id=evaluation.pk,
        payload={"from": "running", "to": to, "reason": reason},
    )
    return True


def _sweep_requeue(evaluation: Evaluation, lost: str, now: Any) -> bool:
    fields = {"lease_owner": "", "heartbeat_at": None}
    if not _sweep_move(evaluation, Evaluation.Status.QUEUED, lost, **fields):
        return False
    _enqueue_evaluation(evaluation.pk)
    return True


def _sweep_fail(evaluation: Evaluation, lost: str, now: Any) -> bool:
    reason = gave_up_reason(evaluation.attempts, lost)
    fields = {"failure_reason": reason, "finished_at": now}
    return _sweep_move(evaluation, Evaluation.Status.FAILED, reason, **fields)


def _evaluation_actor() -> Any:
    from training_app.tasks import evaluate_model_version

    return evaluate_model_version


EVALUATION_JOB = JobSpec(
    model=Evaluation,
    audit_as="evaluation",
    stale_after_s=leases.stale_after_seconds,
    resend_after_s=leases.resend_after_seconds,
    max_attempts=leases.max_attempts,
    actor=_evaluation_actor,
    enqueue=_enqueue_evaluation,
    requeue=_sweep_requeue,
    fail=_sweep_fail,
)


def evaluations_sweep(*, now: Any = None) -> dict[str, list[str]]:
    """Take back evaluations whose worker stopped heartbeating (re-queue them, or fail them
    after MAX_ATTEMPTS lost attempts), then send again the message of every queued evaluation
    that the broker no longer holds."""
    now = now or timezone.now()
    done = stale_leases_sweep(EVALUATION_JOB, now=now)
    done["resent"] = lost_messages_resend(EVALUATION_JOB, now=now)
    return done
