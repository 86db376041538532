"""The settings of one build (filters and pipeline), validated from loose input (API, form, CLI)
with errors that name their field; stored on the version and hashed into its manifest."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .. import pipeline
from ..errors import InvalidDatasetRequest

LABELS = ("approved", "corrected")
PII_MODES = ("mask", "drop", "off")
STRATIFY = ("", "label", "source", "queue")


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
    # The organisation's own published contact details: never masked (`pipeline.allow_pattern`).
    pii_allow: tuple[str, ...] = ()
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
        out["pii_allow"] = _pii_allow(o.get("pii_allow"))
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
        for name in ("queues", "tags", "sources", "labels", "pii_allow"):
            data[name] = list(data[name])
        if not data["pii_allow"]:
            # Left out when empty: versions built before the setting existed keep their
            # stored settings and manifest hash.
            del data["pii_allow"]
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


PII_ALLOW_MAX = 100
PII_ALLOW_MAX_CHARS = 200


def _pii_allow(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidDatasetRequest(
            "pii_allow must be a list of texts that are never masked.", field="pii_allow"
        )
    texts = sorted({v.strip() for v in value if v.strip()})
    if len(texts) > PII_ALLOW_MAX:
        raise InvalidDatasetRequest(
            f"pii_allow takes at most {PII_ALLOW_MAX} texts.", field="pii_allow"
        )
    for text in texts:
        if len(text) > PII_ALLOW_MAX_CHARS:
            raise InvalidDatasetRequest(
                f"pii_allow: {text[:40]!r}... is longer than {PII_ALLOW_MAX_CHARS} characters.",
                field="pii_allow",
            )
        if len(text) < 3:
            raise InvalidDatasetRequest(
                f"pii_allow: {text!r} is too short to name a contact detail.", field="pii_allow"
            )
    return tuple(texts)


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
