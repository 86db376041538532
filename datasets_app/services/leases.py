"""The build lease: a worker claims a building version (compare-and-set on its run token) and
renews the claim's heartbeat at every step; a worker whose build was taken back stops."""

from __future__ import annotations

import uuid

from django.db.models import F
from django.utils import timezone

from core.jobs import lease_renew

from ..models import DatasetVersion


class _LeaseLost(Exception):
    """This worker no longer holds the build: the sweeper gave it to another after its
    heartbeat went stale. The build stops without touching the version."""


def _set_progress(version_id: int, run_token: str, step: str, done: int, total: int) -> None:
    """Record progress and renew the build's heartbeat; raises _LeaseLost if the build was
    taken away from this worker."""
    from .recovery import DATASET_BUILD_JOB  # recovery builds on these leases

    progress = {"step": step, "done": done, "total": total}
    if not lease_renew(DATASET_BUILD_JOB, pk=version_id, owner=run_token, progress=progress):
        raise _LeaseLost(f"dataset version {version_id}: build taken over or ended")


def _dataset_version_claim(version_id: int) -> str | None:
    """Take the build (compare-and-set on an unclaimed building version); returns the lease's
    token, or None if it is over or someone else holds it (a duplicate delivery)."""
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = DatasetVersion.objects.filter(
        pk=version_id, status=DatasetVersion.Status.BUILDING, run_started_at__isnull=True
    ).update(run_started_at=now, heartbeat_at=now, run_token=token, attempts=F("attempts") + 1)
    return token if claimed == 1 else None
