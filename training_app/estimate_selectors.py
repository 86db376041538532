"""Reads for the run form: the schedule a run will get (fitted to its dataset's training split,
`training/recipe.py`), how many optimizer steps that is and, from what finished runs on the
same base model measured, about how long.

No figure is invented: without a finished run to measure, the estimate says so."""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, JSONField, Sum, TextField
from django.db.models.functions import Cast, Coalesce, Length

from datasets_app.models import DatasetVersion, DatasetVersionExample
from training_app.models import BaseModel, TrainingRun
from training_app.training.hyperparameters import DEFAULTS
from training_app.training.recipe import Recipe, estimate_tokens, fit_to_data

MEASURED_RUNS = 5  # the most recent finished runs whose pace is averaged


@dataclass(frozen=True)
class RunEstimate:
    dataset_version: DatasetVersion
    recipe: Recipe
    base_model: BaseModel | None
    # Seconds per example trained on (a step's time grows with its batch); None: no finished
    # run on this base model to measure.
    seconds_per_example: float | None
    measured_runs: int

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.recipe.hyperparameters

    @property
    def train_examples(self) -> int:
        return self.recipe.train_examples

    @property
    def batch_size(self) -> int:
        return self.recipe.hyperparameters["batch_size"]

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.recipe.hyperparameters["gradient_accumulation_steps"]

    @property
    def num_epochs(self) -> int:
        return self.recipe.hyperparameters["num_epochs"]

    @property
    def steps_per_epoch(self) -> int:
        return self.recipe.steps_per_epoch

    @property
    def optimizer_steps(self) -> int:
        return self.recipe.total_steps

    @property
    def stops_early(self) -> bool:
        """The last epoch ends at `max_steps`, before its end."""
        return self.optimizer_steps < self.num_epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return int(self.optimizer_steps * self.recipe.hyperparameters["warmup_ratio"])

    @property
    def seconds(self) -> float | None:
        if self.seconds_per_example is None:
            return None
        return self.recipe.example_passes * self.seconds_per_example


def train_split_size(dataset_version: DatasetVersion) -> tuple[int, int | None]:
    """(examples, tokens) of the training split, in one aggregate query: the tokens estimated
    from the characters of the messages trained on (`recipe.estimate_tokens`; the JSON's keys
    and quotes stand in for the chat template's role markers), None where none could be read."""
    members = DatasetVersionExample.objects.filter(version=dataset_version, split="train")
    totals = members.aggregate(
        examples=Count("pk"),
        chars=Sum(
            Length(
                Cast(
                    # The member's processed copy, else the example's own (as training reads
                    # them: datasets_app.selectors.dataset_version_rows).
                    Coalesce("messages", "example__messages", output_field=JSONField()),
                    output_field=TextField(),
                )
            )
        ),
    )
    recorded = (dataset_version.counts or {}).get("train")
    examples = recorded if isinstance(recorded, int) else int(totals["examples"] or 0)
    chars = totals["chars"]
    return examples, estimate_tokens(int(chars)) if chars else None


def run_recipe(
    *,
    dataset_version: DatasetVersion,
    hyperparameters: dict[str, Any],
    explicit: Collection[str],
) -> Recipe:
    """The schedule fitted to `dataset_version`'s training split: `hyperparameters` complete and
    validated, `explicit` the fields the launcher set (never changed). What
    `training_run_create` records and the launch page shows, so the two cannot differ."""
    examples, tokens = train_split_size(dataset_version)
    return fit_to_data(
        hyperparameters, explicit=explicit, train_examples=examples, train_tokens=tokens
    )


def measured_seconds_per_example(*, base_model: BaseModel | None) -> tuple[float | None, int]:
    """Wall-clock seconds per example trained on over the latest finished runs on `base_model`
    (their steps as their progress recorded them, times the examples of a step; loading and
    evaluation included: the time a launcher waits), and how many runs that is. Per example,
    not per step: a run of batch 2 takes about half the time per step of one of batch 4."""
    if base_model is None:
        return None, 0
    runs = TrainingRun.objects.filter(
        base_model=base_model, status=TrainingRun.Status.SUCCEEDED
    ).order_by("-finished_at")[:MEASURED_RUNS]
    examples = seconds = 0.0
    measured = 0
    for progress, hyperparameters in runs.values_list("progress", "hyperparameters"):
        step, elapsed = (progress or {}).get("step"), (progress or {}).get("elapsed_s")
        hp = {**DEFAULTS, **(hyperparameters or {})}
        per_step = hp["batch_size"] * hp["gradient_accumulation_steps"]
        if isinstance(step, int | float) and isinstance(elapsed, int | float) and step > 0:
            examples += step * per_step
            seconds += elapsed
            measured += 1
    if not measured or seconds <= 0:
        return None, 0
    return seconds / examples, measured


def run_estimate(
    *, dataset_version: DatasetVersion, base_model: BaseModel | None, recipe: Recipe
) -> RunEstimate:
    """The launch page's estimate: `recipe` as `training_run_check` fitted it (the run's own
    schedule, so the steps counted are the steps it will take), at the measured pace."""
    pace, runs = measured_seconds_per_example(base_model=base_model)
    return RunEstimate(
        dataset_version=dataset_version,
        recipe=recipe,
        base_model=base_model,
        seconds_per_example=pace,
        measured_runs=runs,
    )


def dataset_version_to_preselect(*, requested: str | None) -> DatasetVersion | None:
    """The run form's dataset: the ready version asked for (a "Train on this" link), else the
    newest ready one."""
    ready = DatasetVersion.objects.filter(status=DatasetVersion.Status.READY)
    if requested and str(requested).isdigit():
        asked = ready.filter(pk=int(requested)).first()
        if asked is not None:
            return asked
    return ready.order_by("-pk").first()
