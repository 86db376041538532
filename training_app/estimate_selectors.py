"""Reads for the run form: how many optimizer steps a run will take and, from what finished
runs on the same base model measured, about how long.

No figure is invented: without a finished run to measure, the estimate says so."""

import math
from dataclasses import dataclass

from datasets_app.models import DatasetVersion, DatasetVersionExample
from training_app.models import BaseModel, TrainingRun

MEASURED_RUNS = 5  # the most recent finished runs whose pace is averaged


@dataclass(frozen=True)
class RunEstimate:
    dataset_version: DatasetVersion
    train_examples: int
    batch_size: int
    gradient_accumulation_steps: int
    num_epochs: int
    base_model: BaseModel | None
    seconds_per_step: float | None  # None: no finished run on this base model to measure
    measured_runs: int

    @property
    def steps_per_epoch(self) -> int:
        batches = math.ceil(self.train_examples / self.batch_size)
        return math.ceil(batches / self.gradient_accumulation_steps)

    @property
    def optimizer_steps(self) -> int:
        return self.steps_per_epoch * self.num_epochs

    @property
    def seconds(self) -> float | None:
        if self.seconds_per_step is None:
            return None
        return self.optimizer_steps * self.seconds_per_step


def train_examples_of(dataset_version: DatasetVersion) -> int:
    recorded = (dataset_version.counts or {}).get("train")
    if isinstance(recorded, int):
        return recorded
    return DatasetVersionExample.objects.filter(version=dataset_version, split="train").count()


def measured_seconds_per_step(*, base_model: BaseModel | None) -> tuple[float | None, int]:
    """Wall-clock seconds per optimizer step over the latest finished runs on `base_model`, as
    their progress recorded it (loading and evaluation included: the time a launcher waits),
    and how many runs that is."""
    if base_model is None:
        return None, 0
    runs = TrainingRun.objects.filter(
        base_model=base_model, status=TrainingRun.Status.SUCCEEDED
    ).order_by("-finished_at")[:MEASURED_RUNS]
    steps = seconds = 0.0
    measured = 0
    for progress in runs.values_list("progress", flat=True):
        step, elapsed = (progress or {}).get("step"), (progress or {}).get("elapsed_s")
        if isinstance(step, int | float) and isinstance(elapsed, int | float) and step > 0:
            steps += step
            seconds += elapsed
            measured += 1
    if not measured or seconds <= 0:
        return None, 0
    return seconds / steps, measured


def run_estimate(
    *,
    dataset_version: DatasetVersion,
    base_model: BaseModel | None,
    batch_size: int,
    gradient_accumulation_steps: int,
    num_epochs: int,
) -> RunEstimate:
    pace, runs = measured_seconds_per_step(base_model=base_model)
    return RunEstimate(
        dataset_version=dataset_version,
        train_examples=train_examples_of(dataset_version),
        batch_size=max(1, batch_size),
        gradient_accumulation_steps=max(1, gradient_accumulation_steps),
        num_epochs=max(1, num_epochs),
        base_model=base_model,
        seconds_per_step=pace,
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
