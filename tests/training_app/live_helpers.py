"""A registered base model without weights (no torch), for pages that only need the rows."""

from django.conf import settings

from training_app.models import BaseModel, Evaluation, ModelVersion

from .governance_helpers import finished_evaluation_results


def register_fake_base_model(folder) -> BaseModel:
    """The default base model as a row: the pages never load it."""
    folder.mkdir(parents=True, exist_ok=True)
    return BaseModel.objects.create(
        name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"],
        folder=str(folder),
        architecture="LlamaForCausalLM",
    )


def start_evaluation(version: ModelVersion, **fields) -> Evaluation:
    """An evaluation of `version` against its base, claimed by a worker that is still at it."""
    return Evaluation.objects.create(
        version=version,
        dataset_version=version.dataset_version,
        status=Evaluation.Status.RUNNING,
        **fields,
    )


def finish_evaluation(evaluation: Evaluation) -> None:
    """What a worker records when an evaluation succeeds, written directly (no model runs)."""
    from django.utils import timezone

    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Evaluation.Status.DONE,
        finished_at=timezone.now(),
        **finished_evaluation_results(rouge_l=0.6),
    )
    ModelVersion.objects.filter(pk=evaluation.version_id).update(
        status=ModelVersion.Status.EVALUATED
    )
