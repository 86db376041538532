"""Examples from the review loop: one Example per resolved (or auto-accepted) output, made in
the database on PostgreSQL (one INSERT ... SELECT) and in Python elsewhere (the reference)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from reviews.models import Output, Review

from ..models import Example
from .bulk import insert_rows

ProgressFn = Callable[[str, int, int], None]
"""progress(step, done, total): called as a build advances (the CLI draws a bar with it)."""


SYNC_CHUNK = 5000
SYNC_LOCK_KEY = 0x5167_0FF_D5  # pg_advisory_xact_lock key of examples_sync


def _serialise_syncs() -> None:
    """Two builds syncing at once must not both insert the same output's example. PostgreSQL:
    a transaction-scoped advisory lock; SQLite transactions here take the write lock up front
    (IMMEDIATE), which serialises them already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYNC_LOCK_KEY])


def _messages_of(output_input: Any, target: str) -> list[dict[str, str]]:
    if isinstance(output_input, list):
        messages = [
            {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
            for m in output_input
            if isinstance(m, dict)
        ]
    else:
        messages = [{"role": "user", "content": str(output_input)}]
    messages.append({"role": "assistant", "content": target})
    return messages


_DECISION_OF = {"approved": "approve", "corrected": "correct", "rejected": "reject"}


def _example_from(row: dict[str, Any], reviews: list[dict[str, Any]]) -> dict[str, Any]:
    """The column values of a new Example (plain dicts: the bulk path builds no model objects)."""
    label = row["resolution"]
    live = [r for r in reviews if r["stage"] != Review.Stage.GOLD]
    agreeing = [
        r
        for r in live
        if r["stage"] == Review.Stage.REVIEW and r["decision"] == _DECISION_OF[label]
    ]
    resolved_by = row["resolved_by"]
    unreviewed = row["status"] == Output.Status.AUTO_ACCEPTED
    if unreviewed:
        weight, count = 0.5, 0
    elif resolved_by == Output.ResolvedBy.CONSENSUS:
        count = max(len(agreeing), 2)
        weight = float(count)
    else:
        count = len({r["reviewer_id"] for r in live}) or 1
        weight = 1.0
    rejected = label == Output.Resolution.REJECTED
    target = row["output_text"] if rejected else (row["final_output"] or row["output_text"])
    return dict(
        output_id=row["id"],
        kind=Example.Kind.NEGATIVE if rejected else Example.Kind.POSITIVE,
        label=label,
        resolved_by=resolved_by,
        unreviewed=unreviewed,
        lead_decided=resolved_by == Output.ResolvedBy.LEAD,
        reviewer_count=count,
        weight=weight,
        messages=_messages_of(row["input"], target),
        original_text=row["output_text"],
        queue_id=row["queue_id"],
        queue_name=row["queue__name"] or "",
        routing_rule_id=row["routing_rule_id"],
        source=row["source"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        tags=list(row["tags"] or []),
        resolved_at=row["resolved_at"],
        output_updated_at=row["updated_at"],
    )


# The same rows as `_example_from`, made by the database in one INSERT ... SELECT: on PostgreSQL
# a sync of 100,000 outputs then moves no row through Python (the Python path spent ~12 s
# building, dumping and copying them). Only outputs whose input and tags have the plain shapes
# this statement reproduces exactly are taken (an input that is a string, or a list whose
# objects carry string roles and string or missing contents; tags a list); any other output
# falls through to the Python path, which stays the reference: a test compares the two.
def _sync_sql() -> str:
    from reviews.models import Queue

    def table(model: type[models.Model]) -> str:
        return connection.ops.quote_name(model._meta.db_table)

    agreeing = " ".join(
        f"WHEN '{label}' THEN rv.n_{decision}" for label, decision in _DECISION_OF.items()
    )
    counts = ", ".join(
        f"count(*) FILTER (WHERE r.stage = 'review' AND r.decision = '{decision}') AS n_{decision}"
        for decision in _DECISION_OF.values()
    )
    # The reviews are counted per output in one pass and hash-joined, not looked up and
    # counted output by output (a lateral subquery: 100,000 index probes and aggregates).
    return f"""
INSERT INTO {table(Example)} (
  output_id, kind, label, resolved_by, unreviewed, lead_decided, reviewer_count, weight,
  messages, original_text, queue_id, queue_name, routing_rule_id, source, model_name,
  model_version, tags, resolved_at, output_updated_at, created_at, updated_at)
SELECT o.id,
  CASE WHEN o.resolution = 'rejected' THEN 'negative' ELSE 'positive' END,
  o.resolution, o.resolved_by, o.status = 'auto_accepted', o.resolved_by = 'lead',
  CASE WHEN o.status = 'auto_accepted' THEN 0
       WHEN o.resolved_by = 'consensus' THEN GREATEST(CASE o.resolution {agreeing} END, 2)
       ELSE GREATEST(COALESCE(rv.reviewers, 0), 1) END,
  CASE WHEN o.status = 'auto_accepted' THEN 0.5
       WHEN o.resolved_by = 'consensus' THEN GREATEST(CASE o.resolution {agreeing} END, 2)
       ELSE 1.0 END,
  (CASE WHEN jsonb_typeof(o.input) = 'string'
        THEN jsonb_build_array(jsonb_build_object('role', 'user', 'content', o.input #>> '{{}}'))
        ELSE (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'role', COALESCE(m.value ->> 'role', 'user'),
                'content', COALESCE(m.value ->> 'content', '')) ORDER BY m.ordinality), '[]')
              FROM jsonb_array_elements(o.input) WITH ORDINALITY AS m
              WHERE jsonb_typeof(m.value) = 'object') END)
   || jsonb_build_array(jsonb_build_object('role', 'assistant', 'content',
        CASE WHEN o.resolution = 'rejected' OR o.final_output = '' THEN o.output_text
             ELSE o.final_output END)),
  o.output_text, o.queue_id, COALESCE(q.name, ''), o.routing_rule_id, o.source, o.model_name,
  o.model_version, CASE WHEN jsonb_typeof(o.tags) = 'array' THEN o.tags ELSE '[]' END,
  o.resolved_at, o.updated_at, %(now)s, %(now)s
FROM {table(Output)} o
LEFT JOIN {table(Queue)} q ON q.id = o.queue_id
LEFT JOIN (
  SELECT r.output_id, {counts},
         count(DISTINCT r.reviewer_id) FILTER (WHERE r.stage <> 'gold') AS reviewers
  FROM {table(Review)} r
  WHERE r.output_id = ANY(%(ids)s) AND r.undone_at IS NULL
  GROUP BY r.output_id
) rv ON rv.output_id = o.id
WHERE o.id = ANY(%(ids)s)
  AND jsonb_typeof(o.tags) IN ('array', 'null')
  AND (jsonb_typeof(o.input) = 'string'
       OR (jsonb_typeof(o.input) = 'array' AND NOT EXISTS (
             SELECT 1 FROM jsonb_array_elements(o.input) AS m
             WHERE jsonb_typeof(m.value) = 'object'
               AND ((m.value ? 'role' AND jsonb_typeof(m.value -> 'role') <> 'string')
                    OR (m.value ? 'content'
                        AND jsonb_typeof(m.value -> 'content') NOT IN ('string', 'null'))))))
ON CONFLICT (output_id) DO NOTHING
RETURNING output_id
"""


SYNC_PARALLEL_MIN = 20000  # outputs from which the database path runs on two connections


def _sync_chunk_in_database(output_ids: list[int]) -> set[int]:
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        # The row estimates of this statement are poor, and JIT-compiling it costs ~0.4 s.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(_sync_sql(), {"now": now, "ids": output_ids})
        return {row[0] for row in cursor.fetchall()}


def _sync_chunk_in_thread(output_ids: list[int]) -> set[int]:
    try:
        return _sync_chunk_in_database(output_ids)
    finally:
        connection.close()  # this thread's own connection


def _sync_in_database(output_ids: list[int]) -> set[int]:
    """PostgreSQL: make the plain examples of these outputs in the database; returns the
    outputs whose example was made here. Outputs another sync made meanwhile are skipped
    (ON CONFLICT), so syncs need no lock between them. A large sync is split in two halves,
    each its own transaction on its own connection: the statement is the database's work
    alone, and two backends use both cores while this process waits. (Not inside a caller's
    transaction, whose uncommitted rows another connection would not see.)"""
    if len(output_ids) < SYNC_PARALLEL_MIN or connection.in_atomic_block:
        return _sync_chunk_in_database(output_ids)
    from concurrent.futures import ThreadPoolExecutor

    middle = len(output_ids) // 2
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="examples-sync") as pool:
        halves = pool.map(_sync_chunk_in_thread, [output_ids[:middle], output_ids[middle:]])
        return set().union(*halves)


@dataclass
class SyncResult:
    created: int = 0
    removed: int = 0


def examples_sync(*, progress: ProgressFn | None = None) -> SyncResult:
    """Make the Example rows match the review loop: one per resolved (or auto-accepted) output.

    Idempotent and incremental: only outputs without an example are read. An unused example
    whose output left its resolution (a review was undone) or was re-resolved is removed and,
    if the output is resolved again, recreated. Examples used by a version never change: their
    outputs are locked. Each chunk is its own transaction; a chunk is whole or absent.
    """
    result = SyncResult()
    done_statuses = [Output.Status.RESOLVED, Output.Status.AUTO_ACCEPTED]
    # An example is in use exactly when its output is locked (the build that uses it locks the
    # output in the same transaction), so the check reads outputs, not every version's members.
    stale = (
        Example.objects.filter(output__dataset_lock__isnull=True)
        .filter(
            ~Q(output__status__in=done_statuses)
            | ~Q(output__resolution=F("label"))
            | ~Q(output__resolved_at=F("resolved_at"))
        )
        .values_list("pk", flat=True)
    )
    stale_ids = list(stale)
    if stale_ids:
        with transaction.atomic():
            result.removed = Example.objects.filter(
                pk__in=stale_ids, memberships__isnull=True
            ).delete()[0]
    # The outputs to do are listed first: an anti-join inside the INSERT against the table it
    # fills can be planned as a scan of that (then empty) table per output, which grows as the
    # statement runs (quadratic: minutes, not seconds).
    todo_ids = list(
        Output.objects.filter(status__in=done_statuses, resolution__in=list(_DECISION_OF))
        .exclude(pk__in=Example.objects.values("output_id"))
        .order_by("id")
        .values_list("id", flat=True)
    )
    if connection.vendor == "postgresql" and todo_ids:
        made = _sync_in_database(todo_ids)
        result.created += len(made)
        if progress:
            progress("sync examples", result.created, len(todo_ids))
        todo_ids = [pk for pk in todo_ids if pk not in made]
    total = len(todo_ids)
    columns = (
        "id", "status", "resolution", "resolved_by", "resolved_at", "final_output",
        "output_text", "input", "queue_id", "queue__name", "routing_rule_id", "source",
        "model_name", "model_version", "tags", "updated_at",
    )  # fmt: skip
    for start in range(0, total, SYNC_CHUNK):
        chunk_ids = todo_ids[start : start + SYNC_CHUNK]
        rows = list(
            Output.objects.filter(id__in=chunk_ids, status__in=done_statuses)
            .exclude(resolution="")
            .order_by("id")
            .values(*columns)
        )
        if not rows:
            continue
        by_output: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        review_rows = Review.objects.filter(
            output_id__in=list(by_output), undone_at__isnull=True
        ).values("output_id", "reviewer_id", "stage", "decision")
        for review in review_rows:
            by_output[review["output_id"]].append(review)
        examples = [_example_from(row, by_output[row["id"]]) for row in rows]
        now = timezone.now()
        for example in examples:
            example["created_at"] = example["updated_at"] = now
        with transaction.atomic():
            _serialise_syncs()
            # Another build's sync may have made some of these meanwhile (we waited for it).
            taken = set(
                Example.objects.filter(output_id__in=list(by_output)).values_list(
                    "output_id", flat=True
                )
            )
            fresh = [e for e in examples if e["output_id"] not in taken]
            insert_rows(Example, fresh)
        result.created += len(fresh)
        if progress:
            progress("sync examples", result.created, total)
    return result
