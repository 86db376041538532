"""Model outputs arrive here (API, demo seeding, channels): validated all or nothing, routed,
stored once per (source, external_id).

A batch of 1,000 is the common case, so the path is written for it (bench/bench_ingest.py):
plain-Python validation instead of a serializer per row, rules compiled once per batch, rows
built as tuples rather than model instances, and on PostgreSQL one COPY per table instead of
an ORM insert. Every check and every stored value is the same on both databases."""

import json
import math
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from core.audit.chain import audit_append
from reviews.errors import IngestInvalid
from reviews.models import Output, OutputTag, Queue
from reviews.services.routing import RouteDecision, Router
from reviews.services.text import unstorable

CHAT_ROLES = {"system", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content"}
FIELDS = {
    "external_id",
    "source",
    "model_name",
    "model_version",
    "input",
    "output",
    "confidence",
    "metadata",
    "tags",
    "priority",
    "queue",
}
MAX_TAG_CHARS = 64
PENDING, AUTO_ACCEPTED = Output.Status.PENDING.value, Output.Status.AUTO_ACCEPTED.value
APPROVED, BY_ROUTING = Output.Resolution.APPROVED.value, Output.ResolvedBy.ROUTING.value

# Columns written for a new output, in the order of the tuples `_store` builds; the id is
# added in front by the insert. Columns left out (lease, escalation, lock) start empty.
INSERT_FIELDS = (
    "source",
    "external_id",
    "model_name",
    "model_version",
    "input",
    "output_text",
    "confidence",
    "metadata",
    "tags",
    "priority",
    "status",
    "queue",
    "routing_rule",
    "routing_reason",
    "reviews_done",
    "resolution",
    "resolved_by",
    "final_output",
    "resolved_at",
    "is_gold",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class IngestedItem:
    """What the caller learns about one posted output: where it went, and whether it is new."""

    id: int
    source: str
    external_id: str
    status: str
    queue: str | None
    routing_reason: str
    created: bool


@dataclass
class IngestResult:
    items: list[IngestedItem]

    @property
    def created(self) -> list[bool]:
        return [item.created for item in self.items]

    @property
    def created_count(self) -> int:
        return sum(item.created for item in self.items)

    @cached_property
    def outputs(self) -> list[Output]:
        """The stored records, in the order posted; loaded on first use (one query), since the
        API answers from `items` and never needs them."""
        by_id = Output.objects.select_related("queue", "routing_rule").in_bulk(
            [item.id for item in self.items]
        )
        return [by_id[item.id] for item in self.items]


def _fail(index: int | None, field: str, message: str) -> IngestInvalid:
    path = field if index is None else f"[{index}].{field}"
    where = "" if index is None else f"item {index}: "
    return IngestInvalid(f"{where}{field}: {message}", field=path)


def _storable(value: str) -> bool:
    """No NUL and no lone surrogate (neither database stores them); ASCII is the cheap case."""
    return "\x00" not in value and (value.isascii() or unstorable(value) is None)


def _text(raw: dict, key: str, index: int | None, required: bool, max_len: int) -> str:
    value = raw.get(key)
    # The common case first: a non-empty plain string within bounds.
    if type(value) is str and value and len(value) <= max_len and _storable(value):
        return value
    if value is None or value == "":
        if required:
            raise _fail(index, key, "this field is required")
        return ""
    if not isinstance(value, str):
        raise _fail(index, key, "must be a string")
    if len(value) > max_len:
        raise _fail(index, key, f"longer than {max_len} characters")
    problem = unstorable(value)
    if problem:
        raise _fail(index, key, problem)
    return str(value)


def _prompt(raw: dict, index: int | None, limits: dict[str, Any]) -> str | list[dict[str, str]]:
    prompt = raw.get("input")
    max_text = limits["MAX_TEXT_CHARS"]
    if prompt is None or prompt == "" or prompt == []:
        raise _fail(index, "input", "this field is required")
    if isinstance(prompt, str):
        if len(prompt) > max_text:
            raise _fail(index, "input", f"longer than {max_text} characters")
        if not _storable(prompt):
            raise _fail(index, "input", unstorable(prompt) or "")
        return str(prompt)
    if not isinstance(prompt, list):
        raise _fail(index, "input", "must be a string or a list of chat messages")
    if len(prompt) > limits["MAX_MESSAGES"]:
        raise _fail(index, "input", f"more than {limits['MAX_MESSAGES']} messages")
    total = 0
    messages = []
    for position, message in enumerate(prompt):
        if type(message) is dict and message.keys() == MESSAGE_KEYS:
            role, content = message["role"], message["content"]
            if isinstance(role, str) and role in CHAT_ROLES and isinstance(content, str):
                if not _storable(content):
                    problem = unstorable(content) or ""
                    raise _fail(index, f"input[{position}].content", problem)
                total += len(content)
                messages.append({"role": role, "content": content})
                continue
        raise _message_error(message, index, position)
    if total > max_text:
        raise _fail(index, "input", f"messages longer than {max_text} characters in all")
    return messages


def _message_error(message: Any, index: int | None, position: int) -> IngestInvalid:
    field = f"input[{position}]"
    if not isinstance(message, dict) or not message.keys() <= MESSAGE_KEYS:
        return _fail(index, field, "must be an object with 'role' and 'content'")
    role = message.get("role")
    if not isinstance(role, str) or role not in CHAT_ROLES:
        return _fail(index, f"{field}.role", f"must be one of {sorted(CHAT_ROLES)}")
    return _fail(index, f"{field}.content", "must be a string")


def _metadata(raw: dict, index: int | None, limits: dict[str, Any]) -> tuple[dict, str]:
    """The metadata and its JSON text: encoded once, both to check it and to store it."""
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _fail(index, "metadata", "must be a JSON object")
    limit = limits["MAX_METADATA_BYTES"]
    try:
        compact = orjson.dumps(metadata, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except TypeError:
        compact = b""
    # orjson writes NaN and Infinity as null, and some Python values (UUIDs, dataclasses) as
    # JSON that the standard encoder refuses: only metadata that reads back equal is plain
    # JSON. The standard encoder's text is at most 3x longer than orjson's (escaped non-ASCII,
    # spaces after separators), so below a third of the limit the size check cannot fail.
    if (
        compact
        and len(compact) * 3 <= limit
        and b"\\u0000" not in compact
        and orjson.loads(compact) == metadata
    ):
        return metadata, compact.decode()
    try:
        encoded = json.dumps(metadata, allow_nan=False)
    except (ValueError, TypeError):
        raise _fail(index, "metadata", "must be plain JSON (no NaN or Infinity)") from None
    if len(encoded) > limit:
        raise _fail(index, "metadata", f"larger than {limit} bytes")
    if "\\u0000" in encoded:
        raise _fail(index, "metadata", "contains a NUL character")
    try:
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(index, "metadata", "contains a lone surrogate (not valid Unicode)") from None
    return metadata, encoded


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate: let the standard encoder escape it, as Django would
        return json.dumps(value)


def _tags(raw: dict, index: int | None, limits: dict[str, Any]) -> list[str]:
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _fail(index, "tags", "must be a list of strings")
    if len(tags) > limits["MAX_TAGS"]:
        raise _fail(index, "tags", f"more than {limits['MAX_TAGS']} tags")
    clean: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if tag and tag not in clean:  # at most MAX_TAGS: a list beats a set here
            if len(tag) > MAX_TAG_CHARS or not _storable(tag):
                raise _fail(
                    index, "tags", f"tag {tag[:20]!r} is longer than 64 characters or invalid"
                )
            clean.append(tag)
    return clean


def validate_output(
    raw: Any, index: int | None = None, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check one incoming output; return the clean values or raise naming the field.

    Plain Python rather than a DRF serializer: a batch of 1,000 is validated in a few
    milliseconds, which keeps bulk ingest fast (see bench/)."""
    if limits is None:
        limits = _limits()
    if not isinstance(raw, dict):
        raise _fail(index, "item", "must be a JSON object")
    if not raw.keys() <= FIELDS:
        raise _fail(index, sorted(set(raw) - FIELDS)[0], "unknown field")
    max_text = limits["MAX_TEXT_CHARS"]

    clean: dict[str, Any] = {
        "external_id": _text(raw, "external_id", index, True, 255),
        "source": _text(raw, "source", index, False, 100) or "default",
        "model_name": _text(raw, "model_name", index, True, 200),
        "model_version": _text(raw, "model_version", index, False, 100),
        "output_text": _text(raw, "output", index, True, max_text),
        "queue_name": _text(raw, "queue", index, False, 64),
        "input": _prompt(raw, index, limits),
    }

    confidence = raw.get("confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            raise _fail(index, "confidence", "must be a number between 0 and 1")
        # An int may be beyond a float's range (math.isfinite would overflow): compare it as is.
        finite = isinstance(confidence, int) or math.isfinite(confidence)
        if not finite or not 0 <= confidence <= 1:
            raise _fail(index, "confidence", "must be between 0 and 1")
        confidence = float(confidence)
    clean["confidence"] = confidence

    clean["metadata"], clean["metadata_json"] = _metadata(raw, index, limits)
    clean["tags"] = _tags(raw, index, limits)

    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _fail(index, "priority", "must be an integer")
    if not -1000 <= priority <= 1000:
        raise _fail(index, "priority", "must be between -1000 and 1000")
    clean["priority"] = priority
    return clean


def _limits() -> dict[str, Any]:
    return settings.SIGNOFF


def validate_batch(payload: Any) -> list[dict[str, Any]]:
    limits = _limits()
    if isinstance(payload, dict):
        return [validate_output(payload, None, limits)]
    if not isinstance(payload, list):
        raise IngestInvalid("Expected an output object or a list of them.", field="body")
    if not payload:
        raise IngestInvalid("The list of outputs is empty.", field="body")
    if len(payload) > limits["MAX_BATCH"]:
        raise IngestInvalid(
            f"At most {limits['MAX_BATCH']} outputs per request; got {len(payload)}.",
            field="body",
        )
    items = [validate_output(raw, index, limits) for index, raw in enumerate(payload)]
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        key = (item["source"], item["external_id"])
        if key in seen:
            raise _fail(index, "external_id", "appears twice in this request")
        seen.add(key)
    return items


def outputs_ingest(*, payload: Any, actor: AbstractBaseUser | None) -> IngestResult:
    """Store a batch: all or nothing. Re-posted (source, external_id) pairs return the stored
    record untouched. Raises IngestInvalid (nothing stored) on the first bad field."""
    items = validate_batch(payload)
    for attempt in range(2):
        try:
            return _store(items, actor)
        except IntegrityError:
            # A concurrent request stored some of the same ids between our read and our insert;
            # the second pass finds them and returns them as existing.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


@transaction.atomic
def _store(items: list[dict[str, Any]], actor: AbstractBaseUser | None) -> IngestResult:
    queues = _named_queues(items)
    existing = _existing(items)
    router = Router()
    fresh = [
        (item, _decide(item, queues, router))
        for item in items
        if (item["source"], item["external_id"]) not in existing
    ]
    created: dict[tuple[str, str], IngestedItem] = {}
    if fresh:
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        rows = [_output_row(item, decision, now) for item, decision in fresh]
        tags = [item["tags"] for item, _ in fresh]
        insert = _insert_postgresql if connection.vendor == "postgresql" else _insert_portable
        ids = insert(rows, tags)
        routed = Counter(
            decision.queue.name if decision.queue else "auto-accepted" for _, decision in fresh
        )
        audit_append(
            actor=actor,
            action="outputs.ingested",
            object_type="output_batch",
            object_id=f"{ids[0]}-{ids[-1]}",
            payload={"count": len(rows), "routed": dict(routed), "first_id": ids[0]},
        )
        for pk, (item, decision) in zip(ids, fresh, strict=True):
            key = (item["source"], item["external_id"])
            created[key] = IngestedItem(
                id=pk,
                source=item["source"],
                external_id=item["external_id"],
                status=AUTO_ACCEPTED if decision.auto_accept else PENDING,
                queue=decision.queue.name if decision.queue else None,
                routing_reason=decision.reason,
                created=True,
            )
    return IngestResult(
        items=[
            existing.get(key) or created[key]
            for key in ((item["source"], item["external_id"]) for item in items)
        ]
    )


def _decide(item: dict[str, Any], queues: dict[str, Queue], router: Router) -> RouteDecision:
    name = item["queue_name"]
    if name:
        return RouteDecision(queues[name], None, False, "queue named by the client")
    return router.route(item)


def _output_row(item: dict[str, Any], decision: RouteDecision, now: Any) -> tuple:
    """One new output as a tuple in INSERT_FIELDS order."""
    if decision.auto_accept:
        status, resolution, resolved_by = AUTO_ACCEPTED, APPROVED, BY_ROUTING
        final_output, resolved_at = item["output_text"], now
    else:
        status, resolution, resolved_by, final_output, resolved_at = PENDING, "", "", "", None
    return (
        item["source"],
        item["external_id"],
        item["model_name"],
        item["model_version"],
        _json_text(item["input"]),
        item["output_text"],
        item["confidence"],
        item["metadata_json"],
        _json_text(item["tags"]),
        item["priority"] + decision.priority_boost,
        status,
        decision.queue.id if decision.queue else None,
        decision.rule.id if decision.rule else None,
        decision.reason,
        0,  # reviews_done
        resolution,
        resolved_by,
        final_output,
        resolved_at,
        False,  # is_gold
        now,  # created_at
        now,  # updated_at
    )


def _named_queues(items: list[dict[str, Any]]) -> dict[str, Queue]:
    explicit = {item["queue_name"] for item in items if item["queue_name"]}
    if not explicit:
        return {}
    queues = {q.name: q for q in Queue.objects.filter(name__in=explicit)}
    for index, item in enumerate(items):
        name = item["queue_name"]
        if name:
            queue = queues.get(name)
            if queue is None or not queue.is_active or queue.kind != Queue.Kind.REVIEW:
                raise _fail(index if len(items) > 1 else None, "queue", f"unknown queue {name!r}")
    return queues


def _existing(items: list[dict[str, Any]]) -> dict[tuple[str, str], IngestedItem]:
    by_source: dict[str, list[str]] = {}
    for item in items:
        by_source.setdefault(item["source"], []).append(item["external_id"])
    found: dict[tuple[str, str], IngestedItem] = {}
    for source, external_ids in by_source.items():
        for pk, external_id, status, queue_name, reason in _stored_among(source, external_ids):
            found[(source, external_id)] = IngestedItem(
                id=pk,
                source=source,
                external_id=external_id,
                status=status,
                queue=queue_name,
                routing_reason=reason,
                created=False,
            )
    return found


def _stored_among(source: str, external_ids: list[str]) -> list[tuple]:
    """(id, external_id, status, queue name, routing reason) of those already stored."""
    if connection.vendor != "postgresql":
        stored = Output.objects.filter(source=source, external_id__in=external_ids)
        return list(
            stored.values_list("pk", "external_id", "status", "queue__name", "routing_reason")
        )
    # One array parameter rather than the ORM's 1,000 placeholders, which psycopg's
    # client-side binding splits and quotes one by one (~10 ms a batch).
    quote = connection.ops.quote_name
    output, queue = quote(Output._meta.db_table), quote(Queue._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT o.id, o.external_id, o.status, q.name, o.routing_reason FROM {output} o "
            f"LEFT JOIN {queue} q ON q.id = o.queue_id "
            "WHERE o.source = %s AND o.external_id = ANY(%s)",
            [source, external_ids],
        )
        return cursor.fetchall()


def _columns(model: type[models.Model], fields: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    columns = {
        field.name: field.column
        for field in model._meta.concrete_fields
        if field.column is not None
    }
    return ", ".join(quote(columns[name]) for name in fields)


def _insert_postgresql(rows: list[tuple], tags: list[list[str]]) -> list[int]:
    """COPY the rows in with ids taken from the table's sequence first, so that no row has to
    be read back. A concurrent insert of the same (source, external_id) fails the COPY with a
    unique violation, raised as IntegrityError like any ORM insert."""
    quote = connection.ops.quote_name
    output_table, tag_table = Output._meta.db_table, OutputTag._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [output_table, len(rows)],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        with connection.wrap_database_errors:
            columns = _columns(Output, ("id", *INSERT_FIELDS))
            with cursor.cursor.copy(f"COPY {quote(output_table)} ({columns}) FROM STDIN") as copy:
                for pk, row in zip(ids, rows, strict=True):
                    copy.write_row((pk, *row))
            if any(tags):
                columns = _columns(OutputTag, ("output", "name"))
                with cursor.cursor.copy(f"COPY {quote(tag_table)} ({columns}) FROM STDIN") as copy:
                    for pk, names in zip(ids, tags, strict=True):
                        for name in names:
                            copy.write_row((pk, name))
    return ids


def _insert_portable(rows: list[tuple], tags: list[list[str]]) -> list[int]:
    """SQLite and the rest: one executemany per table, then the new ids read back by key."""
    quote = connection.ops.quote_name
    output_table, tag_table = Output._meta.db_table, OutputTag._meta.db_table
    marks = ", ".join(["%s"] * len(INSERT_FIELDS))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {quote(output_table)} ({_columns(Output, INSERT_FIELDS)}) "
            f"VALUES ({marks})",
            rows,
        )
        keys = [(row[0], row[1]) for row in rows]
        by_key: dict[tuple[str, str], int] = {}
        for source in {source for source, _ in keys}:
            wanted = [external_id for s, external_id in keys if s == source]
            stored = Output.objects.filter(source=source, external_id__in=wanted)
            for pk, external_id in stored.values_list("pk", "external_id"):
                by_key[(source, external_id)] = pk
        ids = [by_key[key] for key in keys]
        tag_rows = [(pk, name) for pk, names in zip(ids, tags, strict=True) for name in names]
        if tag_rows:
            cursor.executemany(
                f"INSERT INTO {quote(tag_table)} ({_columns(OutputTag, ('output', 'name'))}) "
                "VALUES (%s, %s)",
                tag_rows,
            )
    return ids
