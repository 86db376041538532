"""What flows through the pipeline: items, step reports, and the content hashes and seeded
ranks that every choice of a step depends on (never database ids or times)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Item:
    """One example on its way through the pipeline."""

    example_id: int
    messages: list[dict[str, str]]
    label: str
    weight: float
    source: str = ""
    queue: str = ""
    tags: list[str] = field(default_factory=list)
    rejected_text: str = ""
    content_hash: str = ""
    split: str = ""
    input_key: str = ""  # the loose input exact dedup compared; near dedup groups by it
    edited: bool = False  # a step changed the messages (else they are the example's own)

    @property
    def prompt_text(self) -> str:
        """The prompt as compared for near duplicates and leakage: the turns before the answer,
        without system messages. A system prompt that every conversation shares would
        otherwise make distinct questions look alike."""
        turns = [m["content"] for m in self.messages[:-1] if m["role"] != "system"]
        return "\n".join(turns or [m["content"] for m in self.messages[:-1]])

    @property
    def target(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""

    def texts(self) -> list[str]:
        """Every text a content step reads or rewrites: the messages, then the rejected text."""
        out = [m["content"] for m in self.messages]
        if self.rejected_text:
            out.append(self.rejected_text)
        return out

    def values(self, dimension: str) -> list[str]:
        if dimension == "label":
            return [self.label]
        if dimension == "source":
            return [self.source]
        if dimension == "queue":
            return [self.queue]
        if dimension == "tag":
            return list(self.tags)
        raise ValueError(dimension)


@dataclass
class StepReport:
    name: str
    count_in: int
    count_out: int
    changed: int = 0
    reasons: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.count_in,
            "out": self.count_out,
            "removed": self.count_in - self.count_out,
            "changed": self.changed,
            "reasons": dict(sorted(self.reasons.items())),
            "samples": self.samples[:10],
            **self.extra,
        }


# One encoder for every call: json.dumps with options builds a new encoder each time, which
# cost more than the encoding itself for ~300k small values per build. Same output.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


_quote = json.encoder.encode_basestring  # a JSON string, as the encoder writes it (C)


def _canonical_content(messages: list[dict[str, str]], rejected_text: str) -> str:
    """canonical_json({"messages": messages, "rejected": rejected_text}), written out directly
    for the usual shape (each message exactly a string role and content, keys in sorted
    order): the same bytes at half the cost of the sorting encoder."""
    if all(len(m) == 2 for m in messages):
        try:
            quoted = [(_quote(m["content"]), _quote(m["role"])) for m in messages]
            turns = ",".join([f'{{"content":{c},"role":{r}}}' for c, r in quoted])
            return f'{{"messages":[{turns}],"rejected":{_quote(rejected_text)}}}'
        except (KeyError, TypeError):
            pass  # another shape: the encoder below
    return canonical_json({"messages": messages, "rejected": rejected_text})


def content_hash(messages: list[dict[str, str]], rejected_text: str = "") -> str:
    """SHA-256 of the processed content; identical on every database and run."""
    return hashlib.sha256(_canonical_content(messages, rejected_text).encode("utf-8")).hexdigest()


def seeded_rank(seed: int, salt: str, digest: str) -> int:
    """A deterministic pseudo-random rank for an item, from the seed and its content hash."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{digest}".encode()).digest()[:8], "big")


def keeper_key(item: Item) -> tuple[float, str]:
    """Which of several duplicates survives: the heaviest (most agreement), then the smallest
    content hash; never a database id, so the choice is the same everywhere."""
    return (-item.weight, item.content_hash)


TEXT_SEPARATOR = "\x00"  # in no text: ingest refuses NUL, normalise strips it
