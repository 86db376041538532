"""Running a build: claim it, sync examples, load candidates, run the pipeline, write the version;
inline (`dataset_version_build`), on a worker (`dataset_version_enqueue`), or either
(`dataset_version_start`)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ..errors import InvalidDatasetRequest
from ..models import DatasetVersion
from .build_settings import BuildSettings
from .candidates import _candidates, candidate_count
from .leases import _dataset_version_claim, _LeaseLost, _set_progress
from .pipeline_run import PIPELINE_STEPS, run_pipeline
from .sync import ProgressFn, examples_sync
from .versions import dataset_version_create, dataset_version_fail
from .write import _dataset_version_finish

logger = logging.getLogger(__name__)


INLINE_LIMIT = 5000  # candidate examples up to which the pages and API build inline


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """A build makes millions of small objects (messages, items, rows) and frees them at the
    end; none form reference cycles, yet the cyclic collector keeps scanning the growing heap
    (a quarter of a 100,000-example build's Python time). Paused for the build, then back.
    Process-wide: another thread's cycles wait until then, memory is freed as usual."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


@_without_cycle_collection()
def dataset_version_run(
    *,
    version_id: int,
    progress: ProgressFn | None = None,
    timings: dict[str, float] | None = None,
) -> DatasetVersion | None:
    """Build a version recorded by dataset_version_create. Safe to call twice (a redelivered
    job): the first caller claims the build; later ones, and a missing version, return None.
    Every step renews the claim's heartbeat; a worker whose build was taken back by
    dataset_builds_recover stops at its next step and returns None. On failure, records it
    on the version and re-raises."""
    token = _dataset_version_claim(version_id)
    if token is None:
        logger.info("dataset version %s: not building or already claimed", version_id)
        return None
    version = DatasetVersion.objects.select_related("created_by").get(pk=version_id)
    import time

    def report(step: str, done: int = 0, total: int = 0) -> None:
        _set_progress(version_id, token, step, done, total)
        if progress:
            progress(step, done, total)

    try:
        settings = BuildSettings.from_json(version.settings)
        started = time.perf_counter()
        sync = examples_sync(progress=lambda s, d, t: report(s, d, t))
        if timings is not None:
            timings["sync_examples"] = time.perf_counter() - started
        report("load candidates")
        started = time.perf_counter()
        candidates = _candidates(settings)
        if not candidates.items:
            raise InvalidDatasetRequest(
                "No reviewed outputs match these filters: nothing to build.", field="filters"
            )
        if timings is not None:
            timings["load_candidates"] = time.perf_counter() - started
        steps = PIPELINE_STEPS

        def step_progress(step: str) -> None:
            report(step, steps.index(step), len(steps))

        result = run_pipeline(candidates.items, settings, progress=step_progress, timings=timings)
        result.counts["negatives_available"] = candidates.negatives
        result.counts["sync"] = {"created": sync.created, "removed": sync.removed}
        report("write", 0, len(result.items))
        started = time.perf_counter()
        version = _dataset_version_finish(
            version=version,
            run_token=token,
            items=result.items,
            counts=result.counts,
            settings=settings,
            timings=timings,
        )
        if timings is not None:
            # The manifest is computed inside the write (while the database locks the outputs).
            timings["write"] = time.perf_counter() - started - timings.get("manifest", 0.0)
        if progress:
            progress("done", len(result.items), len(result.items))
        return version
    except _LeaseLost as exc:
        logger.warning("%s; this worker stops", exc)
        return None
    except Exception as exc:
        dataset_version_fail(
            version_id=version_id, error=f"{type(exc).__name__}: {exc}", run_token=token
        )
        raise


def dataset_version_build(
    *,
    user: AbstractBaseUser,
    name: str,
    parent: DatasetVersion | None = None,
    progress: ProgressFn | None = None,
    timings: dict[str, float] | None = None,
    **options: Any,
) -> DatasetVersion:
    """Build a dataset version inline and return it, ready.

    Contract (training_app relies on it): `user` (ml_engineer or admin; callers check the
    role), `name`, optional `parent` (default: the newest ready version of the same name) and
    keyword options, each validated (InvalidDatasetRequest names the bad one):

    - filters: queues, tags, sources (lists of names), model_name, model_version,
      resolved_from / resolved_to (ISO 8601), labels (subset of approved, corrected),
      include_auto_accepted (bool, default False; such examples weigh 0.5);
    - pipeline: normalise (bool), pii ("mask" | "drop" | "off"), pii_patterns
      ({"TYPE": regex}), exact_dedup (bool), near_dup_threshold (word n-gram Jaccard on the
      input, default 0.8; None or 0 turns it off), leakage_threshold (0.8), ngram (3),
      max_length and tokenizer_path (a tokenizer.json: lengths in tokens, else characters),
      caps ({"label"|"tag"|"source"|"queue": {value or "*": max}}), seed (0),
      eval_fraction (0.1), stratify ("" | "label" | "source" | "queue").

    Returns the version with status "ready", its examples split train/eval, counts, settings
    and manifest_hash; the outputs it uses are locked. On failure the version is marked
    "failed" with the error, nothing else is written, and the error is raised.
    For large builds use dataset_version_enqueue (the `datasets` Dramatiq queue).
    """
    version = dataset_version_create(user=user, name=name, parent=parent, **options)
    built = dataset_version_run(version_id=version.pk, progress=progress, timings=timings)
    assert built is not None  # we created it, so we hold the claim
    return built


def dataset_version_enqueue(
    *, user: AbstractBaseUser, name: str, parent: DatasetVersion | None = None, **options: Any
) -> DatasetVersion:
    """Record a version and have a worker build it (after this transaction commits)."""
    from ..tasks import build_dataset_version

    with transaction.atomic():
        version = dataset_version_create(user=user, name=name, parent=parent, **options)
        version.enqueued_at = timezone.now()
        DatasetVersion.objects.filter(pk=version.pk).update(enqueued_at=version.enqueued_at)
        transaction.on_commit(lambda: build_dataset_version.send(version.pk))
    return version


def dataset_version_start(
    *,
    user: AbstractBaseUser,
    name: str,
    parent: DatasetVersion | None = None,
    run: str = "auto",
    **options: Any,
) -> tuple[DatasetVersion, bool]:
    """Build inline or as a background job ("auto": inline up to INLINE_LIMIT candidates).
    Returns the version and whether it was built inline. Used by the API and the pages."""
    if run not in ("auto", "inline", "background"):
        raise InvalidDatasetRequest("run must be auto, inline or background.", field="run")
    if run == "auto":
        run = "inline" if candidate_count(**options) <= INLINE_LIMIT else "background"
    if run == "inline":
        # A request answered inline is refused as a whole: no failed version of it stays
        # behind. Inline builds are small, so the audit head is not held for long.
        with transaction.atomic():
            return dataset_version_build(user=user, name=name, parent=parent, **options), True
    return dataset_version_enqueue(user=user, name=name, parent=parent, **options), False
