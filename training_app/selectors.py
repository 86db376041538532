"""Reads worth naming for the training pages and API."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from core.permissions import can
from training_app.errors import ModelVersionNotFound, TrainingRunNotFound
from training_app.models import BaseModel, Evaluation, ModelVersion, TrainingRun


def can_view_training(user: AbstractBaseUser | AnonymousUser) -> bool:
    return can(user, "training.view")


def training_runs_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related(
        "dataset_version", "base_model", "created_by", "model_version", "parent_version"
    ).order_by("-created_at")


def training_run_get(*, run_id: Any) -> TrainingRun:
    try:
        return training_runs_list().get(pk=run_id)
    except (TrainingRun.DoesNotExist, ValueError) as exc:
        raise TrainingRunNotFound(f"No training run {run_id}.") from exc


def model_versions_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related(
        "base_model", "dataset_version", "parent", "created_by", "run"
    ).order_by("-created_at")


def model_version_get(*, version_id: Any) -> ModelVersion:
    try:
        return model_versions_list().get(pk=version_id)
    except (ModelVersion.DoesNotExist, ValueError) as exc:
        raise ModelVersionNotFound(f"No model version {version_id}.") from exc


def model_version_evaluations(*, version: ModelVersion) -> list[Evaluation]:
    return list(version.evaluations.select_related("reference").order_by("-created_at"))


def latest_evaluation(*, version: ModelVersion) -> Evaluation | None:
    return (
        version.evaluations.filter(status=Evaluation.Status.DONE)
        .select_related("reference")
        .order_by("-finished_at")
        .first()
    )


def base_models_list() -> QuerySet[BaseModel]:
    return BaseModel.objects.order_by("name")
