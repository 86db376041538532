"""Where the long jobs behind a page stand (evaluations, a sign-off's comparisons), for the
parts of pages that poll themselves until the job is over.

An evaluation records no step count, only its status and when it was requested, so progress
is counted in evaluations (1 of 2 done) and time in how long ago the oldest unfinished one was
requested."""

from dataclasses import dataclass, field
from datetime import datetime

from training_app.models import Evaluation, ModelVersion

UNFINISHED = (Evaluation.Status.QUEUED, Evaluation.Status.RUNNING)


@dataclass(frozen=True)
class EvaluationsProgress:
    total: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    waiting_since: datetime | None = None
    unfinished: list[Evaluation] = field(default_factory=list)

    @property
    def is_active(self) -> bool:
        return bool(self.unfinished)

    @property
    def finished(self) -> int:
        return self.done + self.failed


def evaluations_progress(evaluations: list[Evaluation]) -> EvaluationsProgress:
    unfinished = [e for e in evaluations if e.status in UNFINISHED]
    count = {status: sum(e.status == status for e in evaluations) for status in Evaluation.Status}
    return EvaluationsProgress(
        total=len(evaluations),
        done=count[Evaluation.Status.DONE],
        failed=count[Evaluation.Status.FAILED],
        running=count[Evaluation.Status.RUNNING],
        queued=count[Evaluation.Status.QUEUED],
        waiting_since=min((e.created_at for e in unfinished), default=None),
        unfinished=unfinished,
    )


def version_evaluations_progress(*, version: ModelVersion) -> EvaluationsProgress:
    """The version's own evaluations (a sign-off's comparisons are that request's page's)."""
    return evaluations_progress(
        list(
            version.evaluations.filter(signoff_request__isnull=True)
            .select_related("reference")
            .order_by("created_at")
        )
    )
