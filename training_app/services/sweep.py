"""The training-run sweeper: takes back runs whose worker stopped heartbeating, and sends again
the message of queued runs that the broker lost."""

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from training_app.models import TrainingRun
from training_app.services.leases import lost_messages_resend
from training_app.services.runs import _conf, _end_run, _enqueue_training, _run_transition


def training_runs_sweep(*, now: Any = None) -> dict[str, list[str]]:
    """Take back runs whose worker stopped heartbeating: re-queue them, or fail them after
    MAX_ATTEMPTS lost attempts; honour a cancel asked for while the worker was gone. Then send
    again the message of every queued run that the broker no longer holds."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=_conf("STALE_AFTER_SECONDS"))
    done: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": [], "resent": []}
    stale = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale_before
    )
    for run in stale:
        with transaction.atomic():
            # Re-read under a row lock: a worker that just came back to life keeps its run, and
            # its next heartbeat waits for this decision (then finds its lease gone).
            run = (
                TrainingRun.objects.select_for_update(no_key=True)
                .filter(pk=run.pk, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale_before)
                .first()
            )
            if run is None:
                continue
            seen = f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S}"
            lost = f"worker {run.lease_owner} stopped (last heartbeat {seen})"
            if run.cancel_requested_at is not None:
                _end_run(
                    run=run,
                    to=TrainingRun.Status.CANCELLED,
                    actor=None,
                    reason=lost,
                    owner=run.lease_owner,
                )
                done["cancelled"].append(str(run.pk))
            elif run.attempts >= _conf("MAX_ATTEMPTS"):
                reason = f"lost its worker {run.attempts} times; last: {lost}"
                _end_run(
                    run=run,
                    to=TrainingRun.Status.FAILED,
                    actor=None,
                    reason=reason,
                    owner=run.lease_owner,
                )
                done["failed"].append(str(run.pk))
            else:
                _run_transition(
                    run=run,
                    to=TrainingRun.Status.QUEUED,
                    actor=None,
                    owner=run.lease_owner,
                    payload={"reason": lost, "attempts": run.attempts},
                    lease_owner="",
                    heartbeat_at=None,
                )
                _enqueue_training(run.pk)
                done["requeued"].append(str(run.pk))
    from training_app.tasks import train_model_version

    done["resent"] = lost_messages_resend(
        model=TrainingRun,
        actor=train_model_version,
        object_type="training_run",
        enqueue=_enqueue_training,
        now=now,
    )
    return done
