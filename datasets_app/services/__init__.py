"""Every write of the datasets app: syncing examples from the review loop, building versions.

A build runs in three parts so that nothing is half-written and no slow work (tokenizing,
deduplication) happens inside a transaction:

1. `dataset_version_create` records a `building` version (and its audit event);
2. the pipeline runs on plain Python objects, writing only `progress`;
3. one transaction writes every membership row, locks the outputs used, checks they did not
   change meanwhile, sets the manifest and moves the version to `ready` with its audit event.
   If anything fails, that transaction rolls back whole and `dataset_version_fail` records why.

One module per concern: `build_settings` (validated settings), `sync` (examples from the review
loop), `examples` (hand edits), `versions` (record and status), `leases` (a worker's claim and
heartbeat), `candidates`, `pipeline_run`, `manifest`, `locks` (lock and check the outputs),
`bulk` (COPY), `write` (part 3), `builds` (running a build inline or on a worker) and
`recovery` (builds whose message or worker was lost). Callers import from here
(`from datasets_app.services import dataset_version_build`); a test that patches a name patches
it in the module whose function looks it up (`services.builds.run_pipeline`), since patching
this package's re-export changes nothing the callers see.
"""

from .build_settings import LABELS, PII_MODES, STRATIFY, BuildSettings
from .builds import (
    INLINE_LIMIT,
    dataset_version_build,
    dataset_version_enqueue,
    dataset_version_run,
    dataset_version_start,
)
from .bulk import WRITE_BATCH, insert_rows, insert_tuples
from .candidates import Candidates, candidate_count
from .examples import example_delete, example_update
from .locks import ID_CHUNK
from .manifest import MANIFEST_FORMAT, manifest_hash
from .pipeline_run import PIPELINE_STEPS, PipelineResult, run_pipeline
from .recovery import (
    BUILD_MAX_ATTEMPTS,
    BUILD_RESEND_AFTER_S,
    BUILD_STALE_AFTER_S,
    dataset_builds_recover,
)
from .sync import (
    SYNC_CHUNK,
    SYNC_LOCK_KEY,
    SYNC_PARALLEL_MIN,
    ProgressFn,
    SyncResult,
    examples_sync,
)
from .versions import dataset_version_create, dataset_version_fail, dataset_version_transition

__all__ = [
    "BUILD_MAX_ATTEMPTS",
    "BUILD_RESEND_AFTER_S",
    "BUILD_STALE_AFTER_S",
    "ID_CHUNK",
    "INLINE_LIMIT",
    "LABELS",
    "MANIFEST_FORMAT",
    "PII_MODES",
    "PIPELINE_STEPS",
    "STRATIFY",
    "SYNC_CHUNK",
    "SYNC_LOCK_KEY",
    "SYNC_PARALLEL_MIN",
    "WRITE_BATCH",
    "BuildSettings",
    "Candidates",
    "PipelineResult",
    "ProgressFn",
    "SyncResult",
    "candidate_count",
    "dataset_builds_recover",
    "dataset_version_build",
    "dataset_version_create",
    "dataset_version_enqueue",
    "dataset_version_fail",
    "dataset_version_run",
    "dataset_version_start",
    "dataset_version_transition",
    "example_delete",
    "example_update",
    "examples_sync",
    "insert_rows",
    "insert_tuples",
    "manifest_hash",
    "run_pipeline",
]
