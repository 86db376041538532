"""Model outputs arrive here (API, demo seeding, channels later): validated all or nothing,
routed, stored once per (source, external_id)."""

import json
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..errors import IngestInvalid
from ..models import Output, OutputTag, Queue
from .audit import audit_append
from .routing import Router

CHAT_ROLES = {"system", "user", "assistant", "tool"}
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


@dataclass
class IngestResult:
    outputs: list[Output]
    created: list[bool]

    @property
    def created_count(self) -> int:
        return sum(self.created)


def _fail(index: int | None, field: str, message: str) -> IngestInvalid:
    path = field if index is None else f"[{index}].{field}"
    where = "" if index is None else f"item {index}: "
    return IngestInvalid(f"{where}{field}: {message}", field=path)


def _has_bad_chars(text: str) -> bool:
    return "\x00" in text


def _text(raw: dict, key: str, index: int | None, *, required: bool, max_len: int) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise _fail(index, key, "this field is required")
        return ""
    if not isinstance(value, str):
        raise _fail(index, key, "must be a string")
    if len(value) > max_len:
        raise _fail(index, key, f"longer than {max_len} characters")
    if _has_bad_chars(value):
        raise _fail(index, key, "contains a NUL character")
    return value


def validate_output(raw: Any, index: int | None = None) -> dict[str, Any]:
    """Check one incoming output; return the clean values or raise naming the field.

    Plain Python rather than a DRF serializer: a batch of 1,000 is validated in a few
    milliseconds, which keeps bulk ingest fast (see bench/)."""
    limits = settings.SIGNOFF
    max_text = limits["MAX_TEXT_CHARS"]
    if not isinstance(raw, dict):
        raise _fail(index, "item", "must be a JSON object")
    unknown = set(raw) - FIELDS
    if unknown:
        raise _fail(index, sorted(unknown)[0], "unknown field")

    clean: dict[str, Any] = {
        "external_id": _text(raw, "external_id", index, required=True, max_len=255),
        "source": _text(raw, "source", index, required=False, max_len=100) or "default",
        "model_name": _text(raw, "model_name", index, required=True, max_len=200),
        "model_version": _text(raw, "model_version", index, required=False, max_len=100),
        "output_text": _text(raw, "output", index, required=True, max_len=max_text),
        "queue_name": _text(raw, "queue", index, required=False, max_len=64),
    }

    prompt = raw.get("input")
    if prompt is None or prompt == "" or prompt == []:
        raise _fail(index, "input", "this field is required")
    if isinstance(prompt, str):
        if len(prompt) > max_text:
            raise _fail(index, "input", f"longer than {max_text} characters")
        if _has_bad_chars(prompt):
            raise _fail(index, "input", "contains a NUL character")
    elif isinstance(prompt, list):
        if len(prompt) > limits["MAX_MESSAGES"]:
            raise _fail(index, "input", f"more than {limits['MAX_MESSAGES']} messages")
        total = 0
        messages = []
        for position, message in enumerate(prompt):
            field = f"input[{position}]"
            if not isinstance(message, dict) or set(message) - {"role", "content"}:
                raise _fail(index, field, "must be an object with 'role' and 'content'")
            role, content = message.get("role"), message.get("content")
            if role not in CHAT_ROLES:
                raise _fail(index, f"{field}.role", f"must be one of {sorted(CHAT_ROLES)}")
            if not isinstance(content, str):
                raise _fail(index, f"{field}.content", "must be a string")
            if _has_bad_chars(content):
                raise _fail(index, f"{field}.content", "contains a NUL character")
            total += len(content)
            messages.append({"role": role, "content": content})
        if total > max_text:
            raise _fail(index, "input", f"messages longer than {max_text} characters in all")
        prompt = messages
    else:
        raise _fail(index, "input", "must be a string or a list of chat messages")
    clean["input"] = prompt

    confidence = raw.get("confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            raise _fail(index, "confidence", "must be a number between 0 and 1")
        if not math.isfinite(confidence) or not 0 <= confidence <= 1:
            raise _fail(index, "confidence", "must be between 0 and 1")
        confidence = float(confidence)
    clean["confidence"] = confidence

    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _fail(index, "metadata", "must be a JSON object")
    try:
        encoded = json.dumps(metadata, allow_nan=False)
    except (ValueError, TypeError):
        raise _fail(index, "metadata", "must be plain JSON (no NaN or Infinity)") from None
    if len(encoded) > limits["MAX_METADATA_BYTES"]:
        raise _fail(index, "metadata", f"larger than {limits['MAX_METADATA_BYTES']} bytes")
    if "\\u0000" in encoded:
        raise _fail(index, "metadata", "contains a NUL character")
    clean["metadata"] = metadata

    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _fail(index, "tags", "must be a list of strings")
    if len(tags) > limits["MAX_TAGS"]:
        raise _fail(index, "tags", f"more than {limits['MAX_TAGS']} tags")
    tags = list(dict.fromkeys(tag.strip() for tag in tags if tag.strip()))
    for tag in tags:
        if len(tag) > 64 or _has_bad_chars(tag):
            raise _fail(index, "tags", f"tag {tag[:20]!r} is longer than 64 characters or invalid")
    clean["tags"] = tags

    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _fail(index, "priority", "must be an integer")
    if not -1000 <= priority <= 1000:
        raise _fail(index, "priority", "must be between -1000 and 1000")
    clean["priority"] = priority
    return clean


def validate_batch(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, dict):
        return [validate_output(payload)]
    if not isinstance(payload, list):
        raise IngestInvalid("Expected an output object or a list of them.", field="body")
    if not payload:
        raise IngestInvalid("The list of outputs is empty.", field="body")
    limit = settings.SIGNOFF["MAX_BATCH"]
    if len(payload) > limit:
        raise IngestInvalid(
            f"At most {limit} outputs per request; got {len(payload)}.", field="body"
        )
    items = [validate_output(raw, index) for index, raw in enumerate(payload)]
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
    explicit = {item["queue_name"] for item in items if item["queue_name"]}
    queues = {q.name: q for q in Queue.objects.filter(name__in=explicit)} if explicit else {}
    for index, item in enumerate(items):
        name = item["queue_name"]
        if name:
            queue = queues.get(name)
            if queue is None or not queue.is_active or queue.kind != Queue.Kind.REVIEW:
                raise _fail(index if len(items) > 1 else None, "queue", f"unknown queue {name!r}")

    existing = _existing(items)
    router = Router()
    now = timezone.now()
    fresh: list[Output] = []
    routed: dict[str, int] = {}
    for item in items:
        if (item["source"], item["external_id"]) in existing:
            continue
        output = Output(
            source=item["source"],
            external_id=item["external_id"],
            model_name=item["model_name"],
            model_version=item["model_version"],
            input=item["input"],
            output_text=item["output_text"],
            confidence=item["confidence"],
            metadata=item["metadata"],
            tags=item["tags"],
            priority=item["priority"],
            created_at=now,
            updated_at=now,
        )
        if item["queue_name"]:
            output.queue = queues[item["queue_name"]]
            output.routing_reason = "queue named by the client"
        else:
            decision = router.route(item)
            output.queue = decision.queue
            output.routing_rule = decision.rule
            output.routing_reason = decision.reason
            output.priority += decision.priority_boost
            if decision.auto_accept:
                output.status = Output.Status.AUTO_ACCEPTED
                output.resolution = Output.Resolution.APPROVED
                output.resolved_by = Output.ResolvedBy.ROUTING
                output.final_output = output.output_text
                output.resolved_at = now
        where = output.queue.name if output.queue else "auto-accepted"
        routed[where] = routed.get(where, 0) + 1
        fresh.append(output)

    if fresh:
        Output.objects.bulk_create(fresh, batch_size=500)
        if any(output.pk is None for output in fresh):  # backends that return no ids
            ids = _existing([{"source": o.source, "external_id": o.external_id} for o in fresh])
            for output in fresh:
                output.pk = ids[(output.source, output.external_id)].pk
        tag_rows = [OutputTag(output=o, name=tag) for o in fresh for tag in o.tags]
        if tag_rows:
            OutputTag.objects.bulk_create(tag_rows, batch_size=1000)
        audit_append(
            actor=actor,
            action="outputs.ingested",
            object_type="output_batch",
            object_id=f"{fresh[0].pk}-{fresh[-1].pk}",
            payload={"count": len(fresh), "routed": routed, "first_id": fresh[0].pk},
        )

    by_key = {(o.source, o.external_id): o for o in fresh}
    outputs, created = [], []
    for item in items:
        key = (item["source"], item["external_id"])
        if key in by_key:
            outputs.append(by_key[key])
            created.append(True)
        else:
            outputs.append(existing[key])
            created.append(False)
    return IngestResult(outputs=outputs, created=created)


def _existing(items: list[dict[str, Any]]) -> dict[tuple[str, str], Output]:
    by_source: dict[str, list[str]] = {}
    for item in items:
        by_source.setdefault(item["source"], []).append(item["external_id"])
    found: dict[tuple[str, str], Output] = {}
    for source, external_ids in by_source.items():
        for output in Output.objects.filter(source=source, external_id__in=external_ids):
            found[(output.source, output.external_id)] = output
    return found
