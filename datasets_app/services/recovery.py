"""Taking back builds whose message or worker vanished (a periodic sweeper calls it), with the
job machinery of `core.jobs`: `DATASET_BUILD_JOB` says what a build's lease is (its run token,
heartbeat and attempts) and what taking one back means."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.audit import audit_append
from core.jobs import JobSpec, stale_leases_sweep

from ..models import DatasetVersion
from .versions import dataset_version_transition

# Recovery of builds whose message or worker was lost (Redis emptied, a worker killed). The
# database is the source of truth: a building version is either waiting for a worker
# (unclaimed) or being built (claimed, heartbeat renewed at every step).
BUILD_RESEND_AFTER_S = 300  # unclaimed this long after its message was sent: send it again
BUILD_STALE_AFTER_S = 600  # claimed, no heartbeat for this long: the worker is gone
BUILD_MAX_ATTEMPTS = 3  # workers lost this many times: fail the build instead


def _recovery_conf(name: str) -> Any:
    # settings.SIGNOFF_DATASETS may override these (e.g. {"BUILD_STALE_AFTER_S": 900}).
    from django.conf import settings as django_settings

    return getattr(django_settings, "SIGNOFF_DATASETS", {}).get(name, globals()[name])


def _taken_back(spec: JobSpec, now: datetime) -> Q:
    """A build whose message was lost (unclaimed long after it was sent, or created, if it
    never was) or whose worker died (claimed, no heartbeat for long)."""
    resend_before = now - timedelta(seconds=spec.resend_after_s())
    stale_before = now - timedelta(seconds=_recovery_conf("BUILD_STALE_AFTER_S"))
    lost_message = Q(run_started_at__isnull=True) & (
        Q(enqueued_at__lt=resend_before) | Q(enqueued_at__isnull=True, created_at__lt=resend_before)
    )
    dead_worker = Q(run_started_at__isnull=False, heartbeat_at__lt=stale_before) | Q(
        run_started_at__isnull=False, heartbeat_at__isnull=True, run_started_at__lt=stale_before
    )
    return Q(status=DatasetVersion.Status.BUILDING) & (lost_message | dead_worker)


def _why_lost(version: DatasetVersion) -> str:
    if version.run_started_at is None:
        return "its build message was lost (never picked up)"
    seen = version.heartbeat_at or version.run_started_at
    return f"its worker stopped (last heartbeat {seen:%Y-%m-%d %H:%M:%S})"


def _build_fail(version: DatasetVersion, reason: str, now: datetime) -> bool:
    dataset_version_transition(
        version=version,
        to=DatasetVersion.Status.FAILED,
        error=f"Lost its worker {version.attempts} times; last time {reason}.",
        built_at=None,
    )
    audit_append(
        actor=None,
        action="dataset_version.failed",
        object_type="dataset_version",
        object_id=version.pk,
        payload={"name": version.name, "error": reason, "attempts": version.attempts},
    )
    return True


def _build_requeue(version: DatasetVersion, reason: str, now: datetime) -> bool:
    from ..tasks import build_dataset_version

    DatasetVersion.objects.filter(pk=version.pk).update(
        run_started_at=None,
        run_token="",
        heartbeat_at=None,
        enqueued_at=now,
        progress={"step": "queued", "done": 0, "total": 0},
    )
    audit_append(
        actor=None,
        action="dataset_version.requeued",
        object_type="dataset_version",
        object_id=version.pk,
        payload={"name": version.name, "reason": reason, "attempts": version.attempts},
    )
    transaction.on_commit(partial(build_dataset_version.send, version.pk))
    return True


DATASET_BUILD_JOB = JobSpec(
    model=DatasetVersion,
    audit_as="dataset_version",
    running=DatasetVersion.Status.BUILDING,
    queued=DatasetVersion.Status.BUILDING,
    owner_field="run_token",
    resend_after_s=lambda: _recovery_conf("BUILD_RESEND_AFTER_S"),
    stale_after_s=lambda: _recovery_conf("BUILD_STALE_AFTER_S"),
    max_attempts=lambda: _recovery_conf("BUILD_MAX_ATTEMPTS"),
    stale=_taken_back,
    lost=_why_lost,
    # A build whose message was lost never had a worker to lose: it is always sent again.
    may_give_up=lambda version: version.run_started_at is not None,
    requeue=_build_requeue,
    fail=_build_fail,
    requeued_as="resent",
    report_id=lambda pk: pk,
    # A build being written holds its row's lock: skipped, not waited for.
    lock={"skip_locked": True},
)


def dataset_builds_recover(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Take back builds whose message or worker vanished; idempotent, for a periodic sweeper.

    - unclaimed for BUILD_RESEND_AFTER_S since its message was sent (or since it was created,
      if it never was): the message was lost (a broker restarted empty), so it is sent again;
    - claimed, but no heartbeat for BUILD_STALE_AFTER_S: the worker died; the claim is
      released and the message sent again, or, once BUILD_MAX_ATTEMPTS workers were lost on
      it, the build is marked failed with why.

    Each decision re-reads the version under a row lock (a build being written holds that
    lock and is skipped), is audited, and sends only after commit. Sending a message that was
    not lost after all is harmless: the second delivery finds the build claimed and does
    nothing. Returns the ids re-sent and failed.
    """
    return stale_leases_sweep(DATASET_BUILD_JOB, now=now or timezone.now())
