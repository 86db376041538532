"""The training-run sweeper: takes back runs whose worker stopped heartbeating, and sends again
the message of queued runs that the broker lost (`core.jobs`, with `runs.TRAINING_RUN_JOB`)."""

from typing import Any

from django.utils import timezone

from core.jobs import lost_messages_resend, stale_leases_sweep
from training_app.services.runs import TRAINING_RUN_JOB


def training_runs_sweep(*, now: Any = None) -> dict[str, list[str]]:
    """Take back runs whose worker stopped heartbeating: re-queue them, or fail them after
    MAX_ATTEMPTS lost attempts; honour a cancel asked for while the worker was gone. Then send
    again the message of every queued run that the broker no longer holds."""
    now = now or timezone.now()
    done = stale_leases_sweep(TRAINING_RUN_JOB, now=now)
    done["resent"] = lost_messages_resend(TRAINING_RUN_JOB, now=now)
    return done
