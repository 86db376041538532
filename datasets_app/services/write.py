"""The last part of a build: one transaction writes every membership row, locks the outputs used,
checks they did not change meanwhile, sets the manifest and moves the version to ready."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core.audit import audit_append

from .. import pipeline
from ..errors import SourceChanged
from ..models import DatasetVersion, DatasetVersionExample
from .build_settings import BuildSettings
from .bulk import insert_tuples
from .leases import _LeaseLost
from .locks import _lock_and_check_sql, _lock_outputs, _outputs_changed
from .manifest import manifest_hash
from .versions import dataset_version_transition

_MEMBER_COLUMNS = [
    "version_id",
    "example_id",
    "split",
    "position",
    "messages",
    "rejected_text",
    "weight",
    "label",
    "content_hash",
]


def _timed_manifest(
    settings: BuildSettings, items: list[pipeline.Item], timings: dict[str, float] | None
) -> str:
    import time

    started = time.perf_counter()
    digest = manifest_hash(settings, items)
    if timings is not None:
        timings["manifest"] = time.perf_counter() - started
    return digest


def _member_rows(*, version_id: int, items: list[pipeline.Item]) -> list[list[Any]]:
    """The membership rows in `_MEMBER_COLUMNS` order: each split by content hash."""
    rows: list[list[Any]] = []
    for split in ("train", "eval"):
        members = sorted(
            (item for item in items if item.split == split),
            key=lambda it: (it.content_hash, it.example_id),
        )
        rows.extend(
            [
                version_id,
                item.example_id,
                split,
                position,
                item.messages if item.edited else None,
                item.rejected_text,
                item.weight,
                item.label,
                item.content_hash,
            ]
            for position, item in enumerate(members)
        )
    return rows


@transaction.atomic
def _dataset_version_finish(
    *,
    version: DatasetVersion,
    run_token: str,
    items: list[pipeline.Item],
    counts: dict[str, Any],
    settings: BuildSettings,
    timings: dict[str, float] | None = None,
) -> DatasetVersion:
    version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if version.status != DatasetVersion.Status.BUILDING or version.run_token != run_token:
        raise _LeaseLost(f"dataset version {version.pk}: build taken over or ended")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # The lock and check statements join 100,000 ids: compiling them costs more than
            # it saves.
            cursor.execute("SET LOCAL jit = off")
    now = timezone.now()
    # An example's output, label and resolution time never change (a re-resolved output gets a
    # new example), and the example cannot be deleted under a membership, so the outputs the
    # examples name now are the ones they were made from. Outputs locked before are as their
    # examples say (a locked output's reviews cannot be undone): only those locked now are
    # checked.
    example_ids = sorted(item.example_id for item in items)
    if connection.vendor == "postgresql":
        # Sent before the membership rows are built (psycopg's pipeline mode), so that the
        # database locks and checks while this process builds them.
        raw = connection.connection
        with raw.pipeline(), raw.cursor() as cursor:
            cursor.execute(_lock_and_check_sql(), [now, example_ids])
            digest = _timed_manifest(settings, items, timings)
            rows = _member_rows(version_id=version.pk, items=items)
            changed_ids = [pk for pk, changed in cursor.fetchall() if changed]
    else:
        digest = _timed_manifest(settings, items, timings)
        newly_locked = _lock_outputs(example_ids=example_ids, now=now)
        changed_ids = _outputs_changed(output_ids=newly_locked) if newly_locked else []
        rows = _member_rows(version_id=version.pk, items=items)
    if changed_ids:
        shown = ", ".join(map(str, changed_ids[:5]))
        raise SourceChanged(
            f"Outputs {shown} changed during the build; build again.",
            extra={"outputs": changed_ids[:5]},
        )
    insert_tuples(DatasetVersionExample, _MEMBER_COLUMNS, rows)
    del rows
    dataset_version_transition(
        version=version,
        to=DatasetVersion.Status.READY,
        manifest_hash=digest,
        counts=counts,
        built_at=now,
        progress={"step": "done", "done": counts["total"], "total": counts["total"]},
    )
    audit_append(
        actor=version.created_by,
        action="dataset_version.built",
        object_type="dataset_version",
        object_id=version.pk,
        payload={
            "name": version.name,
            "manifest_hash": digest,
            "train": counts["train"],
            "eval": counts["eval"],
            "candidates": counts["candidates"],
            "parent": version.parent_id,
        },
    )
    return version
