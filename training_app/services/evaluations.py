"""Evaluation of a model version against its parent (or the bare base model), as a job."""

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from datasets_app.selectors import dataset_version_rows
from reviews.services import audit_append

from ..errors import TransitionRefused
from ..models import Evaluation, ModelVersion
from .versions import model_version_loadable_adapter, model_version_transition

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
            from ..tasks import evaluate_model_version

            transaction.on_commit(lambda: evaluate_model_version.send(str(evaluation.pk)))
    return evaluation


def _evaluation_rows(evaluation: Evaluation) -> Any:
    if evaluation.split == "regression":
        from ..models import RegressionCase

        return (
            {
                "example_id": f"regression-{case.pk}",
                "messages": [
                    {"role": "user", "content": case.prompt},
                    {"role": "assistant", "content": case.reference},
                ],
                "weight": 1.0,
            }
            for case in RegressionCase.objects.filter(channel_id=evaluation.channel_id)
        )
    return dataset_version_rows(version=evaluation.dataset_version, split=evaluation.split)


def _eval_transition(evaluation: Evaluation, frm: str, to: str, **fields: Any) -> bool:
    return Evaluation.objects.filter(pk=evaluation.pk, status=frm).update(status=to, **fields) == 1


def evaluation_execute(*, evaluation_id: Any, owner: str) -> Evaluation | None:
    """Claim, run and record one evaluation; a duplicate delivery does nothing."""
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
    ):
        logger.info("evaluation %s already taken or gone; delivery ignored", evaluation_id)
        return None
    from ..training.data import write_jsonl
    from ..training.evaluate import EvaluationArguments
    from ..training.evaluate import run as run_evaluation

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
            _eval_transition(
                evaluation,
                Evaluation.Status.RUNNING,
                Evaluation.Status.FAILED,
                failure_reason=reason,
                finished_at=timezone.now(),
            )
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
            metrics=metrics,
            samples=result.samples,
            finished_at=timezone.now(),
        ):
            raise TransitionRefused(f"Evaluation {evaluation.pk} changed under us.")
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
