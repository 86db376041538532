"""Every write of the datasets app: syncing examples from the review loop, building versions.

A build runs in three parts so that nothing is half-written and no slow work (tokenizing,
deduplication) happens inside a transaction:

1. `dataset_version_create` records a `building` version (and its audit event);
2. the pipeline runs on plain Python objects, writing only `progress`;
3. one transaction writes every membership row, locks the outputs used, checks they did not
   change meanwhile, sets the manifest and moves the version to `ready` with its audit event.
   If anything fails, that transaction rolls back whole and `dataset_version_fail` records why.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Cast
from django.utils import timezone

from reviews.models import Output, OutputLock, Review
from reviews.services import audit_append

from . import pipeline
from .errors import DatasetImmutable, ExampleInUse, InvalidDatasetRequest, SourceChanged
from .models import DatasetVersion, DatasetVersionExample, Example

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""progress(step, done, total): called as a build advances (the CLI draws a bar with it)."""

LABELS = ("approved", "corrected")
PII_MODES = ("mask", "drop", "off")
STRATIFY = ("", "label", "source", "queue")
INLINE_LIMIT = 5000  # candidate examples up to which the pages and API build inline
SYNC_CHUNK = 5000
WRITE_BATCH = 5000
SYNC_LOCK_KEY = 0x5167_0FF_D5  # pg_advisory_xact_lock key of examples_sync
MANIFEST_FORMAT = "signoff-dataset/1"
PIPELINE_STEPS = ["normalise", "pii", "exact dedup", "near dedup", "length", "balance", "split"]


# ---------------------------------------------------------------------------------------------
# Settings


def _parse_time(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise InvalidDatasetRequest(
                f"{name} must be an ISO 8601 date or time, not {value!r}.", field=name
            ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise InvalidDatasetRequest(f"{name} must be a list of non-empty strings.", field=name)
    return tuple(sorted(set(value)))


@dataclass(frozen=True)
class BuildSettings:
    """Filters and pipeline settings of one build; stored on the version and hashed."""

    # Filters (which examples are candidates).
    queues: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    model_name: str = ""
    model_version: str = ""
    resolved_from: str | None = None
    resolved_to: str | None = None
    labels: tuple[str, ...] = LABELS
    include_auto_accepted: bool = False
    # Pipeline.
    normalise: bool = True
    pii: str = "mask"
    pii_patterns: dict[str, str] = field(default_factory=dict)
    exact_dedup: bool = True
    near_dup_threshold: float | None = 0.8
    leakage_threshold: float = 0.8
    ngram: int = 3
    max_length: int | None = None
    tokenizer_path: str = ""
    caps: dict[str, dict[str, int]] = field(default_factory=dict)
    seed: int = 0
    eval_fraction: float = 0.1
    stratify: str = ""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> BuildSettings:
        """Validate loose input (API, form, CLI); every error names its field."""
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise InvalidDatasetRequest(f"Unknown setting {name!r}.", field=name)
        o = dict(options)
        out: dict[str, Any] = {}
        for name in ("queues", "tags", "sources"):
            out[name] = _str_tuple(o.get(name), name)
        for name in ("model_name", "model_version", "tokenizer_path", "stratify", "pii"):
            value = o.get(name, getattr(cls, name) if name != "pii" else "mask")
            value = "" if value is None else value
            if not isinstance(value, str):
                raise InvalidDatasetRequest(f"{name} must be a string.", field=name)
            out[name] = value.strip()
        out["resolved_from"] = _parse_time(o.get("resolved_from"), "resolved_from")
        out["resolved_to"] = _parse_time(o.get("resolved_to"), "resolved_to")
        if (
            out["resolved_from"]
            and out["resolved_to"]
            and out["resolved_from"] > out["resolved_to"]
        ):
            raise InvalidDatasetRequest(
                "resolved_from must not be after resolved_to.", field="resolved_from"
            )
        labels = _str_tuple(o.get("labels", LABELS), "labels")
        if not labels or any(label not in LABELS for label in labels):
            raise InvalidDatasetRequest(
                f"labels must be a non-empty subset of {', '.join(LABELS)}.", field="labels"
            )
        out["labels"] = labels
        for name in ("include_auto_accepted", "normalise", "exact_dedup"):
            value = o.get(name, getattr(cls, name))
            if not isinstance(value, bool):
                raise InvalidDatasetRequest(f"{name} must be true or false.", field=name)
            out[name] = value
        if out["pii"] not in PII_MODES:
            raise InvalidDatasetRequest(f"pii must be one of {', '.join(PII_MODES)}.", field="pii")
        out["pii_patterns"] = _pii_patterns(o.get("pii_patterns") or {})
        out["near_dup_threshold"] = _fraction(
            o.get("near_dup_threshold", 0.8), "near_dup_threshold", allow_none=True
        )
        out["leakage_threshold"] = _fraction(o.get("leakage_threshold", 0.8), "leakage_threshold")
        out["ngram"] = _int(o.get("ngram", 3), "ngram", low=1, high=10)
        max_length = o.get("max_length")
        out["max_length"] = (
            None if max_length in (None, "") else _int(max_length, "max_length", low=1)
        )
        if out["tokenizer_path"]:
            path = out["tokenizer_path"]
            if not path.endswith(".json") or not os.path.isfile(path):
                raise InvalidDatasetRequest(
                    "tokenizer_path must name an existing tokenizer.json file.",
                    field="tokenizer_path",
                )
        out["caps"] = _caps(o.get("caps") or {})
        out["seed"] = _int(o.get("seed", 0), "seed", low=0, high=2**31 - 1)
        eval_fraction = _fraction(o.get("eval_fraction", 0.1), "eval_fraction")
        if eval_fraction is None or eval_fraction >= 1:
            raise InvalidDatasetRequest("eval_fraction must be in [0, 1).", field="eval_fraction")
        out["eval_fraction"] = eval_fraction
        if out["stratify"] not in STRATIFY:
            raise InvalidDatasetRequest(
                "stratify must be empty or one of label, source, queue.", field="stratify"
            )
        return cls(**out)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("queues", "tags", "sources", "labels"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildSettings:
        return cls.from_options(data)

    def manifest_json(self) -> dict[str, Any]:
        """What the manifest hashes: the settings, with the tokenizer named by its content
        (a path differs between machines; the file's bytes do not)."""
        data = self.as_json()
        path = data.pop("tokenizer_path")
        data["tokenizer_sha256"] = _file_sha256(path) if path else ""
        return data


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise InvalidDatasetRequest(f"{name} must be an integer.", field=name)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidDatasetRequest(f"{name} must be an integer.", field=name) from exc
    if isinstance(value, float) and number != value:
        raise InvalidDatasetRequest(f"{name} must be an integer.", field=name)
    if (low is not None and number < low) or (high is not None and number > high):
        raise InvalidDatasetRequest(f"{name} must be between {low} and {high}.", field=name)
    return number


def _fraction(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    if value in (None, "") and allow_none:
        return None
    if isinstance(value, bool):
        raise InvalidDatasetRequest(f"{name} must be a number.", field=name)
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidDatasetRequest(f"{name} must be a number.", field=name) from exc
    if allow_none and number == 0:
        return None
    if not 0 <= number <= 1 or (name.endswith("threshold") and number == 0):
        raise InvalidDatasetRequest(f"{name} must be in (0, 1].", field=name)
    return number


def _pii_patterns(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidDatasetRequest(
            "pii_patterns must map a TYPE name to a regular expression.", field="pii_patterns"
        )
    out = {}
    for kind, pattern in value.items():
        if not isinstance(kind, str) or not pipeline.PII_TYPE_RE.match(kind):
            raise InvalidDatasetRequest(
                f"pii_patterns: {kind!r} is not an upper-case type name like POLICY_NUMBER.",
                field="pii_patterns",
            )
        if not isinstance(pattern, str) or not pattern:
            raise InvalidDatasetRequest(
                f"pii_patterns.{kind} must be a regular expression.", field="pii_patterns"
            )
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InvalidDatasetRequest(
                f"pii_patterns.{kind} is not a valid regular expression: {exc}.",
                field="pii_patterns",
            ) from exc
        if compiled.match(""):
            raise InvalidDatasetRequest(
                f"pii_patterns.{kind} matches the empty string.", field="pii_patterns"
            )
        out[kind] = pattern
    return dict(sorted(out.items()))


def _caps(value: Any) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict):
        raise InvalidDatasetRequest(
            'caps must look like {"label": {"approved": 500}, "tag": {"*": 100}}.', field="caps"
        )
    out: dict[str, dict[str, int]] = {}
    for dim, limits in value.items():
        if dim not in pipeline.BALANCE_DIMENSIONS:
            raise InvalidDatasetRequest(
                f"caps: {dim!r} is not one of {', '.join(pipeline.BALANCE_DIMENSIONS)}.",
                field="caps",
            )
        if not isinstance(limits, dict) or not limits:
            raise InvalidDatasetRequest(f"caps.{dim} must map values to counts.", field="caps")
        out[dim] = {str(key): _int(cap, "caps", low=0) for key, cap in sorted(limits.items())}
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# Bulk writes


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """Insert many rows of one model fast (see insert_tuples); every row must carry every
    column named by the first row."""
    if not rows:
        return
    names = list(rows[0])
    insert_tuples(model, names, [[row[name] for name in names] for row in rows])


_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(ensure_ascii=False), built once


def insert_tuples(model: type[models.Model], names: list[str], rows: list[list[Any]]) -> None:
    """Insert many rows of one model fast: COPY on PostgreSQL, one executemany elsewhere.

    A version of 100,000 examples must be written in seconds; the ORM's bulk_create spends
    most of that building model objects and adapting values one by one. `rows` hold values in
    the order of `names` (field names), JSON fields as Python values (dumped here), datetimes
    aware, None as NULL. The lists are changed in place. Runs inside the caller's transaction.
    """
    if not rows:
        return
    fields = [model._meta.get_field(name) for name in names]
    columns = [field.column for field in fields]
    json_at = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    time_at = [i for i, f in enumerate(fields) if isinstance(f, models.DateTimeField)]
    if connection.vendor == "postgresql":
        time_at = []  # psycopg adapts aware datetimes itself
    adapt_time = connection.ops.adapt_datetimefield_value
    dump = _JSON.encode
    for row in rows:
        for i in json_at:
            if row[i] is not None:  # None is SQL NULL, as the ORM stores it
                row[i] = dump(row[i])
        for i in time_at:
            row[i] = adapt_time(row[i])
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO {table} ({column_list}) VALUES ({marks})"
            for start in range(0, len(rows), WRITE_BATCH):
                cursor.executemany(sql, rows[start : start + WRITE_BATCH])


def _serialise_syncs() -> None:
    """Two builds syncing at once must not both insert the same output's example. PostgreSQL:
    a transaction-scoped advisory lock; SQLite transactions here take the write lock up front
    (IMMEDIATE), which serialises them already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYNC_LOCK_KEY])


# ---------------------------------------------------------------------------------------------
# Examples from the review loop


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


def _refuse_if_used(example: Example) -> None:
    versions = list(
        DatasetVersionExample.objects.filter(example_id=example.pk)
        .values_list("version_id", flat=True)
        .order_by("version_id")[:5]
    )
    if versions:
        raise ExampleInUse(
            f"Example {example.pk} is used by dataset version(s) "
            f"{', '.join(map(str, versions))}, which are immutable.",
            extra={"versions": versions},
        )


@transaction.atomic
def example_update(
    *, user: AbstractBaseUser, example: Example, messages: list[dict[str, str]]
) -> Example:
    """Hand-edit an example's messages; refused once any dataset version uses it."""
    # Lock the row: a build finishing meanwhile must not capture the example mid-edit.
    example = Example.objects.select_for_update().get(pk=example.pk)
    _refuse_if_used(example)
    if (
        not isinstance(messages, list)
        or len(messages) < 2
        or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
            for m in messages
        )
        or messages[-1]["role"] != "assistant"
    ):
        raise InvalidDatasetRequest(
            "messages must be [{role, content}, ...] ending with an assistant message.",
            field="messages",
        )
    before = example.messages
    example.messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    example.save(update_fields=["messages", "updated_at"])
    audit_append(
        actor=user,
        action="example.updated",
        object_type="example",
        object_id=example.pk,
        payload={
            "before_sha256": pipeline.content_hash(before),
            "after_sha256": pipeline.content_hash(example.messages),
        },
    )
    return example


@transaction.atomic
def example_delete(*, user: AbstractBaseUser, example: Example) -> None:
    """Delete an example; refused once any dataset version uses it."""
    example = Example.objects.select_for_update().get(pk=example.pk)
    _refuse_if_used(example)
    pk, output_id = example.pk, example.output_id
    example.delete()
    audit_append(
        actor=user,
        action="example.deleted",
        object_type="example",
        object_id=pk,
        payload={"output_id": output_id},
    )


# ---------------------------------------------------------------------------------------------
# Dataset versions


def dataset_version_transition(*, version: DatasetVersion, to: str, **changes: Any) -> None:
    """Compare-and-set on the status, against the transition table. Call inside the
    transaction that also appends the audit event."""
    frm = DatasetVersion.Status(version.status)
    if to not in DatasetVersion.TRANSITIONS[frm]:
        raise DatasetImmutable(f"A dataset version cannot go from {frm} to {to}.")
    updated = DatasetVersion.objects.filter(pk=version.pk, status=frm).update(status=to, **changes)
    if updated != 1:
        raise DatasetImmutable(f"Dataset version {version.pk} changed in the meantime.")
    version.status = to
    for key, value in changes.items():
        setattr(version, key, value)


def _validated_name(name: str) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name or len(name) > 100:
        raise InvalidDatasetRequest("name must be 1 to 100 characters.", field="name")
    return name


@transaction.atomic
def dataset_version_create(
    *,
    user: AbstractBaseUser,
    name: str,
    parent: DatasetVersion | None = None,
    **options: Any,
) -> DatasetVersion:
    """Record a version to build (status building); `options` as for dataset_version_build."""
    name = _validated_name(name)
    settings = BuildSettings.from_options(options)
    if parent is None:
        parent = (
            DatasetVersion.objects.filter(name=name, status=DatasetVersion.Status.READY)
            .order_by("-built_at", "-id")
            .first()
        )
    elif parent.status != DatasetVersion.Status.READY:
        raise InvalidDatasetRequest("parent must be a ready dataset version.", field="parent")
    version = DatasetVersion.objects.create(
        name=name,
        created_by=user,
        parent=parent,
        settings=settings.as_json(),
        progress={"step": "queued", "done": 0, "total": 0},
    )
    audit_append(
        actor=user,
        action="dataset_version.requested",
        object_type="dataset_version",
        object_id=version.pk,
        payload={
            "name": name,
            "parent": parent.pk if parent else None,
            "settings": version.settings,
        },
    )
    return version


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


class _LeaseLost(Exception):
    """This worker no longer holds the build: the sweeper gave it to another after its
    heartbeat went stale. The build stops without touching the version."""


def _set_progress(version_id: int, run_token: str, step: str, done: int, total: int) -> None:
    """Record progress and renew the build's heartbeat; raises _LeaseLost if the build was
    taken away from this worker."""
    alive = DatasetVersion.objects.filter(
        pk=version_id, status=DatasetVersion.Status.BUILDING, run_token=run_token
    ).update(progress={"step": step, "done": done, "total": total}, heartbeat_at=timezone.now())
    if not alive:
        raise _LeaseLost(f"dataset version {version_id}: build taken over or ended")


@dataclass
class Candidates:
    items: list[pipeline.Item]
    negatives: int


def _candidates(settings: BuildSettings) -> Candidates:
    """Positive examples matching the filters, as pipeline items; and the negatives count."""
    examples = Example.objects.all()
    if settings.queues:
        examples = examples.filter(queue_name__in=settings.queues)
    if settings.sources:
        examples = examples.filter(source__in=settings.sources)
    if settings.model_name:
        examples = examples.filter(model_name=settings.model_name)
    if settings.model_version:
        examples = examples.filter(model_version=settings.model_version)
    if settings.resolved_from:
        examples = examples.filter(resolved_at__gte=datetime.fromisoformat(settings.resolved_from))
    if settings.resolved_to:
        examples = examples.filter(resolved_at__lte=datetime.fromisoformat(settings.resolved_to))
    if settings.tags:
        examples = examples.filter(
            output_id__in=Output.objects.filter(tag_rows__name__in=settings.tags).values("id")
        )
    if not settings.include_auto_accepted:
        examples = examples.filter(unreviewed=False)
    negatives = examples.filter(kind=Example.Kind.NEGATIVE).count()
    query = (
        examples.filter(kind=Example.Kind.POSITIVE, label__in=settings.labels)
        .annotate(messages_text=Cast("messages", models.TextField()))
        .annotate(tags_text=Cast("tags", models.TextField()))
        .order_by("id")
        .values_list(
            "id",
            "messages_text",
            "label",
            "weight",
            "source",
            "queue_name",
            "tags_text",
            "original_text",
        )
        .query
    )
    # A plain cursor, JSON as text and one json.loads per value: the ORM's and the driver's
    # per-value converters cost more than the JSON decoding itself over 100,000 rows. Tags are
    # decoded only where there are some.
    sql, params = query.get_compiler(connection=connection).as_sql()
    items: list[pipeline.Item] = []
    loads = json.loads
    item = pipeline.Item
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(5000):
            for eid, messages, label, weight, source, queue, tags, original in chunk:
                items.append(
                    item(
                        eid,
                        loads(messages),
                        label,
                        weight,
                        source,
                        queue,
                        [] if tags in ("[]", None) else list(loads(tags) or []),
                        original if label == "corrected" else "",
                    )
                )
    return Candidates(items=items, negatives=negatives)


@dataclass
class PipelineResult:
    items: list[pipeline.Item]
    counts: dict[str, Any]


def run_pipeline(
    items: list[pipeline.Item],
    settings: BuildSettings,
    *,
    progress: Callable[[str], None] | None = None,
    timings: dict[str, float] | None = None,
) -> PipelineResult:
    """All quality steps over candidate items; returns the survivors (with split) and counts."""
    import time

    def tick(name: str, started: float) -> float:
        now = time.perf_counter()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + now - started
        return now

    reports: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"candidates": len(items)}
    clock = time.perf_counter()
    if settings.normalise:
        progress and progress("normalise")
        items, report = pipeline.step_normalise(items)
        reports.append(report.as_dict())
        clock = tick("normalise", clock)
    progress and progress("pii")
    items, report, per_type = pipeline.step_pii(
        items, mode=settings.pii, patterns=settings.pii_patterns
    )
    reports.append(report.as_dict())
    counts["pii"] = per_type
    clock = tick("pii", clock)
    pipeline.assign_hashes(items)
    if settings.exact_dedup:
        progress and progress("exact dedup")
        items, report = pipeline.step_exact_dedup(items)
        reports.append(report.as_dict())
    clock = tick("exact_dedup", clock)
    progress and progress("near dedup")
    join_at = min(settings.near_dup_threshold or 1.0, settings.leakage_threshold)
    graph = pipeline.build_input_graph(items, threshold=join_at, ngram=settings.ngram)
    group_by_item = {id(item): graph.group_of[i] for i, item in enumerate(items)}
    if settings.near_dup_threshold:
        items, report = pipeline.step_near_dedup(
            items, graph, threshold=settings.near_dup_threshold
        )
        reports.append(report.as_dict())
    clock = tick("near_dedup", clock)
    progress and progress("length")
    counter = pipeline.TokenCounter(settings.tokenizer_path or None)
    items, report = pipeline.step_length(items, counter=counter, max_length=settings.max_length)
    reports.append(report.as_dict())
    clock = tick("length", clock)
    progress and progress("balance")
    items, report, balance = pipeline.step_balance(items, caps=settings.caps, seed=settings.seed)
    reports.append(report.as_dict())
    counts["balance"] = balance
    clock = tick("balance", clock)
    progress and progress("split")
    report = pipeline.step_split(
        items,
        seed=settings.seed,
        eval_fraction=settings.eval_fraction,
        stratify=settings.stratify,
    )
    leak = pipeline.step_leakage(
        items, graph, lambda item: group_by_item[id(item)], threshold=settings.leakage_threshold
    )
    report.changed = leak.changed
    report.reasons.update(leak.reasons)
    report.samples = leak.samples
    report.extra["moved_for_leakage"] = leak.changed
    reports.append(report.as_dict())
    tick("split", clock)
    counts["steps"] = reports
    counts["total"] = len(items)
    for split in ("train", "eval"):
        counts[split] = sum(1 for item in items if item.split == split)
    for key, attr in (("labels", "label"), ("sources", "source"), ("queues", "queue")):
        per: dict[str, Counter] = {"train": Counter(), "eval": Counter()}
        for item in items:
            per[item.split][getattr(item, attr)] += 1
        counts[key] = {s: dict(sorted(c.items())) for s, c in per.items()}
    counts["preference_pairs"] = sum(1 for item in items if item.rejected_text)
    return PipelineResult(items=items, counts=counts)


def manifest_hash(settings: BuildSettings, items: list[pipeline.Item]) -> str:
    """SHA-256 over the canonical content: the settings, then one line per example (split,
    content hash, weight, label) in that order (the weight and label break ties between
    same-content examples when dedup is off). No ids, no times, so the same
    data gives the same hash on SQLite and PostgreSQL and on every run."""
    head = {"format": MANIFEST_FORMAT, "settings": settings.manifest_json()}
    lines = [pipeline.canonical_json(head)]
    # Each line is canonical_json([split, content hash, weight, label]), written out directly
    # (a tenth of the cost, identical bytes) for the usual values; anything unusual is encoded.
    quoted: dict[str, str] = {}

    def quote(text: str) -> str:
        out = quoted.get(text)
        if out is None:
            out = quoted[text] = pipeline.canonical_json(text)
        return out

    hex_digits = set("0123456789abcdef")

    def order(it: pipeline.Item) -> tuple:
        return (it.split, it.content_hash, round(float(it.weight), 6), it.label)

    for item in sorted(items, key=order):
        weight = round(float(item.weight), 6)
        digest = item.content_hash
        if math.isfinite(weight) and len(digest) == 64 and set(digest) <= hex_digits:
            lines.append(f'[{quote(item.split)},"{digest}",{weight!r},{quote(item.label)}]')
        else:
            lines.append(pipeline.canonical_json([item.split, digest, weight, item.label]))
    lines.append("")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


_DONE_STATUSES = (Output.Status.RESOLVED, Output.Status.AUTO_ACCEPTED)
ID_CHUNK = 20000  # ids per statement where a backend takes no array parameter


def _by_ids(
    sql: str, column: str, ids: list[int], params: list[Any], after: tuple[Any, ...] = ()
) -> list[tuple]:
    """Run `sql`, whose `{ids}` stands for a condition on `column`, over the given ids: one
    statement with an array on PostgreSQL, chunks of IN lists elsewhere. `params` come before
    the condition's, `after` after them."""
    rows: list[tuple] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(sql.format(ids=f"{column} = ANY(%s)"), [*params, ids, *after])
            return cursor.fetchall() if cursor.description else []
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(sql.format(ids=f"{column} IN ({marks})"), [*params, *chunk, *after])
            if cursor.description:
                rows += cursor.fetchall()
    return rows


def _lock_outputs(*, example_ids: list[int], now: datetime) -> list[int]:
    """Lock the examples' outputs not locked yet (an OutputLock each: their reviews can no
    longer be undone), and return those outputs. The portable path; SQLite runs one write
    transaction at a time, so nothing can undo a review in between (PostgreSQL: see
    `_LOCK_AND_CHECK_SQL`). The outputs are named through the example ids read for the build,
    and no statement joins the lock table: its statistics are often stale (empty before a
    first build), and the planner's guess then made such a join a scan of it per output."""
    quote = connection.ops.quote_name
    rows = _by_ids(
        f"INSERT INTO {quote(OutputLock._meta.db_table)} (output_id, locked_at) "
        f"SELECT e.output_id, %s FROM {quote(Example._meta.db_table)} AS e WHERE {{ids}} "
        "ON CONFLICT (output_id) DO NOTHING RETURNING output_id",
        "e.id",
        example_ids,
        [now],
    )
    return sorted(row[0] for row in rows)


def _outputs_changed(*, output_ids: list[int]) -> list[int]:
    """Those of the outputs that are no longer resolved the way their example was made from (a
    review undone, or re-resolved, between reading the examples and locking the outputs):
    compared in the database, read after the lock, so nothing slips by."""
    quote = connection.ops.quote_name
    done = ", ".join(f"'{status}'" for status in _DONE_STATUSES)
    rows = _by_ids(
        f"SELECT o.id FROM {quote(Example._meta.db_table)} AS e "
        f"JOIN {quote(Output._meta.db_table)} AS o ON o.id = e.output_id "
        "WHERE {ids} AND NOT ("
        f"o.status IN ({done}) AND o.resolution = e.label AND (o.resolved_at = e.resolved_at "
        "OR (o.resolved_at IS NULL AND e.resolved_at IS NULL)))",
        "o.id",
        output_ids,
        [],
    )
    return sorted(row[0] for row in rows)


def _lock_and_check_sql() -> str:
    """PostgreSQL: `_lock_outputs` and `_outputs_changed` in one statement. The outputs locked
    now are also row-locked FOR SHARE until commit, and their state is read under that lock:
    the review loop's undo locks an output's row before it looks for a lock, so one that comes
    after this waits for the build and then finds the lock, and one that came first is seen
    here (the build then fails). Two builds locking the same outputs both succeed (ON
    CONFLICT). Returns (output id, changed) for every output locked now."""
    quote = connection.ops.quote_name
    output, example = quote(Output._meta.db_table), quote(Example._meta.db_table)
    done = ", ".join(f"'{status}'" for status in _DONE_STATUSES)
    return (
        f"WITH fresh AS (INSERT INTO {quote(OutputLock._meta.db_table)} (output_id, locked_at) "
        f"SELECT e.output_id, %s FROM {example} AS e WHERE e.id = ANY(%s) "
        "ON CONFLICT (output_id) DO NOTHING RETURNING output_id) "
        f"SELECT o.id, NOT (o.status IN ({done}) AND o.resolution = e.label "
        "AND (o.resolved_at = e.resolved_at OR (o.resolved_at IS NULL AND e.resolved_at IS NULL))) "
        f"FROM fresh JOIN {output} AS o ON o.id = fresh.output_id "
        f"JOIN {example} AS e ON e.output_id = o.id ORDER BY o.id FOR SHARE OF o"
    )


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


@transaction.atomic
def dataset_version_fail(
    *, version_id: int, error: str, run_token: str | None = None
) -> DatasetVersion | None:
    """Record that a build failed (with why); a no-op if the version is no longer building,
    or, given the failing worker's run_token, if that worker no longer holds the build."""
    version = DatasetVersion.objects.select_for_update().filter(pk=version_id).first()
    if version is None or version.status != DatasetVersion.Status.BUILDING:
        return version
    if run_token is not None and version.run_token != run_token:
        return version
    dataset_version_transition(
        version=version, to=DatasetVersion.Status.FAILED, error=error[:2000], built_at=None
    )
    audit_append(
        actor=version.created_by,
        action="dataset_version.failed",
        object_type="dataset_version",
        object_id=version.pk,
        payload={"name": version.name, "error": error[:500]},
    )
    return version


def _dataset_version_claim(version_id: int) -> str | None:
    """Take the build (compare-and-set on an unclaimed building version); returns the lease's
    token, or None if it is over or someone else holds it (a duplicate delivery)."""
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = DatasetVersion.objects.filter(
        pk=version_id, status=DatasetVersion.Status.BUILDING, run_started_at__isnull=True
    ).update(run_started_at=now, heartbeat_at=now, run_token=token, attempts=F("attempts") + 1)
    return token if claimed == 1 else None


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
    from .tasks import build_dataset_version

    now = now or timezone.now()
    resend_before = now - timedelta(seconds=_recovery_conf("BUILD_RESEND_AFTER_S"))
    stale_before = now - timedelta(seconds=_recovery_conf("BUILD_STALE_AFTER_S"))
    max_attempts = _recovery_conf("BUILD_MAX_ATTEMPTS")
    building = DatasetVersion.objects.filter(status=DatasetVersion.Status.BUILDING)
    lost_message = Q(run_started_at__isnull=True) & (
        Q(enqueued_at__lt=resend_before) | Q(enqueued_at__isnull=True, created_at__lt=resend_before)
    )
    dead_worker = Q(run_started_at__isnull=False, heartbeat_at__lt=stale_before) | Q(
        run_started_at__isnull=False, heartbeat_at__isnull=True, run_started_at__lt=stale_before
    )
    done: dict[str, list[int]] = {"resent": [], "failed": []}
    for version_id in building.filter(lost_message | dead_worker).values_list("pk", flat=True):
        with transaction.atomic():
            version = (
                building.select_for_update(skip_locked=True)
                .filter(lost_message | dead_worker, pk=version_id)
                .first()
            )
            if version is None:
                continue  # finished, claimed or renewed meanwhile, or being written now
            if version.run_started_at is None:
                reason = "its build message was lost (never picked up)"
            else:
                seen = version.heartbeat_at or version.run_started_at
                reason = f"its worker stopped (last heartbeat {seen:%Y-%m-%d %H:%M:%S})"
            if version.run_started_at is not None and version.attempts >= max_attempts:
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
                done["failed"].append(version.pk)
                continue
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
            done["resent"].append(version.pk)
    return done


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
    from .tasks import build_dataset_version

    with transaction.atomic():
        version = dataset_version_create(user=user, name=name, parent=parent, **options)
        version.enqueued_at = timezone.now()
        DatasetVersion.objects.filter(pk=version.pk).update(enqueued_at=version.enqueued_at)
        transaction.on_commit(lambda: build_dataset_version.send(version.pk))
    return version


def candidate_count(**options: Any) -> int:
    """How many examples a build with these filters would start from (after a sync)."""
    settings = BuildSettings.from_options(options)
    examples = Example.objects.filter(kind=Example.Kind.POSITIVE, label__in=settings.labels)
    if settings.queues:
        examples = examples.filter(queue_name__in=settings.queues)
    if not settings.include_auto_accepted:
        examples = examples.filter(unreviewed=False)
    pending = Output.objects.filter(
        status__in=[Output.Status.RESOLVED, Output.Status.AUTO_ACCEPTED],
        dataset_example__isnull=True,
    ).count()
    return examples.count() + pending


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
