"""Reads worth naming: versions a user may see, a version's rows, samples, diffs, exports."""

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import JSONField, QuerySet
from django.db.models.functions import Coalesce

from core.permissions import can

from .errors import DatasetNotReady, DatasetVersionNotFound, InvalidDatasetRequest
from .models import DatasetVersion, DatasetVersionExample

SPLITS = ("train", "eval")
ROW_CHUNK = 2000
EXPORT_FORMATS = ("chat", "prompt_completion", "dpo")


def can_read_datasets(user: AbstractBaseUser | AnonymousUser) -> bool:
    return can(user, "datasets.read")


def can_build_datasets(user: AbstractBaseUser | AnonymousUser) -> bool:
    return can(user, "datasets.build")


def dataset_versions_list() -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.select_related("created_by", "parent").order_by(
        "-created_at", "-id"
    )


def dataset_version_get(*, version_id: int) -> DatasetVersion:
    version = dataset_versions_list().filter(pk=version_id).first()
    if version is None:
        raise DatasetVersionNotFound(f"Dataset version {version_id} does not exist.")
    return version


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidDatasetRequest(
            f"split must be one of {', '.join(SPLITS)}, not {split!r}.", field="split"
        )


def _with_messages(rows: QuerySet[DatasetVersionExample]) -> QuerySet[DatasetVersionExample]:
    """Each member's processed messages as `train_messages`: its own copy where the pipeline
    changed the example, else the example's (see DatasetVersionExample.messages)."""
    return rows.annotate(
        train_messages=Coalesce("messages", "example__messages", output_field=JSONField())
    )


def _by_position(rows: QuerySet[DatasetVersionExample], *fields: str) -> Iterator[tuple]:
    """Rows of one split in position order, read in keyset chunks: no server-side cursor stays
    open if the caller stops early (a streamed download cut off, a training loop that breaks),
    and each chunk is its own short query."""
    last = -1
    while True:
        chunk = list(
            rows.filter(position__gt=last)
            .order_by("position")
            .values_list("position", *fields)[:ROW_CHUNK]
        )
        if not chunk:
            return
        last = chunk[-1][0]
        for row in chunk:
            yield row[1:]


def dataset_version_rows(*, version: DatasetVersion, split: str) -> Iterator[dict[str, Any]]:
    """Yield one ready version's examples of one split, for training.

    Contract (training_app relies on it): each row is
    ``{"example_id": int, "messages": [{"role": str, "content": str}, ...], "weight": float}``;
    the last message is the assistant target and the ones before it are the prompt
    (system/user/assistant/tool turns). Rows come in the version's fixed order (by split
    position, which follows each example's content hash), so two reads give the same sequence
    on any database. `split` is "train" or "eval". Raises DatasetNotReady unless the version is
    ready, InvalidDatasetRequest for another split. Streams in chunks: safe for large versions.
    """
    _check_split(split)
    if version.status != DatasetVersion.Status.READY:
        raise DatasetNotReady(f"Dataset version {version.pk} is {version.status}, not ready.")
    rows = _with_messages(DatasetVersionExample.objects.filter(version_id=version.pk, split=split))
    for example_id, messages, weight in _by_position(
        rows, "example_id", "train_messages", "weight"
    ):
        yield {"example_id": example_id, "messages": messages, "weight": float(weight)}


def dataset_version_sample(
    *, version: DatasetVersion, split: str, limit: int = 5
) -> list[DatasetVersionExample]:
    """The first `limit` examples of a split in the version's order (a stable sample)."""
    _check_split(split)
    return list(
        DatasetVersionExample.objects.filter(version_id=version.pk, split=split)
        .select_related("example")
        .order_by("position")[:limit]
    )


@dataclass
class VersionDiff:
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self, *, limit: int = 1000) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
            "added_ids": self.added[:limit],
            "removed_ids": self.removed[:limit],
            "changed_ids": self.changed[:limit],
            "truncated": max(len(self.added), len(self.removed), len(self.changed)) > limit,
        }


def dataset_version_diff(*, version: DatasetVersion, other: DatasetVersion) -> VersionDiff:
    """What `version` has compared with `other`, by example: added (only in `version`),
    removed (only in `other`), changed (in both, with different processed content, weight or
    split)."""

    def members(v: DatasetVersion) -> dict[int, tuple[str, str, float]]:
        rows = DatasetVersionExample.objects.filter(version_id=v.pk).values_list(
            "example_id", "content_hash", "split", "weight"
        )
        return {eid: (h, s, w) for eid, h, s, w in rows.iterator(chunk_size=5000)}

    mine, theirs = members(version), members(other)
    diff = VersionDiff()
    for example_id in sorted(mine):
        if example_id not in theirs:
            diff.added.append(example_id)
        elif mine[example_id] != theirs[example_id]:
            diff.changed.append(example_id)
        else:
            diff.unchanged += 1
    diff.removed = sorted(set(theirs) - set(mine))
    return diff


def _prompt_and_target(messages: list[dict[str, str]]) -> tuple[list[dict], dict]:
    return messages[:-1], messages[-1]


def dataset_version_export_lines(
    *, version: DatasetVersion, fmt: str, split: str | None = None
) -> Iterator[str]:
    """JSONL lines (with newline) that `datasets.load_dataset("json", data_files=...)` reads.

    chat: {"messages": [...], "weight", "example_id", "split"};
    prompt_completion: TRL's conversational prompt-completion form {"prompt": [...],
    "completion": [assistant message], ...};
    dpo: TRL's conversational preference form {"prompt": [...], "chosen": [assistant
    correction], "rejected": [assistant original]} for corrected examples only.
    Every line of one format has the same keys and types, so Arrow infers one schema.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidDatasetRequest(
            f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.", field="format"
        )
    if split is not None:
        _check_split(split)
    if version.status != DatasetVersion.Status.READY:
        raise DatasetNotReady(f"Dataset version {version.pk} is {version.status}, not ready.")
    splits = [split] if split else list(SPLITS)
    for one_split in splits:
        rows = DatasetVersionExample.objects.filter(version_id=version.pk, split=one_split)
        if fmt == "dpo":
            rows = rows.filter(label="corrected").exclude(rejected_text="")
        values = _by_position(
            _with_messages(rows), "example_id", "train_messages", "weight", "rejected_text"
        )
        for example_id, messages, weight, rejected_text in values:
            record: dict[str, Any]
            if fmt == "chat":
                record = {"messages": messages}
            else:
                prompt, target = _prompt_and_target(messages)
                if fmt == "prompt_completion":
                    record = {"prompt": prompt, "completion": [target]}
                else:
                    record = {
                        "prompt": prompt,
                        "chosen": [target],
                        "rejected": [{"role": "assistant", "content": rejected_text}],
                    }
            record.update({"weight": float(weight), "example_id": example_id, "split": one_split})
            yield json.dumps(record, ensure_ascii=False) + "\n"


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_version_card(*, version: DatasetVersion) -> str:
    """The data card: Markdown with counts, sources, pipeline settings and the manifest hash."""
    counts = version.counts or {}
    settings_json = json.dumps(version.settings, indent=2, sort_keys=True, ensure_ascii=False)
    parts = [
        f"# Dataset card: {version.name} (version {version.pk})",
        "",
        f"- Status: {version.status}",
        f"- Manifest SHA-256: `{version.manifest_hash or '-'}`",
        f"- Built by: {version.created_by.get_username()}",
        f"- Created: {version.created_at.isoformat()}",
        f"- Built: {version.built_at.isoformat() if version.built_at else '-'}",
        f"- Parent version: {version.parent_id or '-'}",
        f"- Examples: {counts.get('train', 0)} train, {counts.get('eval', 0)} eval",
        "",
        "Examples come from outputs that people resolved in the review loop: approved outputs "
        "keep the model's text, corrected ones the reviewers' correction. Rejected outputs are "
        "never training targets. Weights carry reviewers' agreement (a consensus of n "
        "reviewers weighs n).",
        "",
        "## Pipeline",
        "",
    ]
    steps = counts.get("steps", [])
    if steps:
        parts.append(
            _table(
                [
                    (
                        s["name"],
                        s["in"],
                        s["out"],
                        s.get("removed", 0),
                        s.get("changed", 0),
                        "; ".join(f"{k}: {v}" for k, v in sorted(s.get("reasons", {}).items())),
                    )
                    for s in steps
                ],
                ("step", "in", "out", "removed", "changed", "why"),
            )
        )
    pii = counts.get("pii", {})
    parts += ["", "## PII replaced or dropped, by type", ""]
    parts.append(_table(sorted(pii.items()), ("type", "count")) if pii else "None found.")
    for title, key in (("Labels", "labels"), ("Sources", "sources"), ("Queues", "queues")):
        by_split = counts.get(key, {})
        if by_split:
            names = sorted({n for split in by_split.values() for n in split})
            parts += ["", f"## {title}", ""]
            parts.append(
                _table(
                    [
                        (n, by_split.get("train", {}).get(n, 0), by_split.get("eval", {}).get(n, 0))
                        for n in names
                    ],
                    (title.lower()[:-1], "train", "eval"),
                )
            )
    balance = counts.get("balance", {})
    if balance.get("caps"):
        parts += ["", "## Balance caps", ""]
        rows = []
        for dim, values in sorted(balance.get("before", {}).items()):
            for value, before in sorted(values.items()):
                after = balance.get("after", {}).get(dim, {}).get(value, 0)
                rows.append((dim, value, before, after))
        parts.append(_table(rows, ("dimension", "value", "before", "after")))
    parts += ["", "## Settings", "", "```json", settings_json, "```", ""]
    return "\n".join(parts)


def dataset_version_system_prompt(*, version_id: int) -> str:
    """The system message the version's training examples open with ("" when they have none):
    a model trained on [system, user, assistant] answers as trained only when asked with the
    same system message. Examples may disagree (a queue's prompt changed): the most common one
    wins. Reads each member's first message only."""
    members = DatasetVersionExample.objects.filter(version_id=version_id, split="train").order_by(
        "position"
    )
    firsts = [
        *members.filter(messages__isnull=True).values_list("example__messages__0", flat=True),
        *members.filter(messages__isnull=False).values_list("messages__0", flat=True),
    ]
    counts = Counter(
        first["content"]
        for first in firsts
        if isinstance(first, dict)
        and first.get("role") == "system"
        and isinstance(first.get("content"), str)
    )
    return counts.most_common(1)[0][0] if counts else ""


# What each recorded build step is doing, in words, and what its done/total count.
_BUILD_STEP_WORDS = {
    "sync examples": ("Turning reviewed outputs into examples", "outputs"),
    "load candidates": ("Loading the reviewed outputs that match the filters", ""),
    "write": ("Writing the version's examples", "examples"),
}


@dataclass(frozen=True)
class BuildProgress:
    """Where a dataset build stands, for the part of its page that polls until it is over."""

    is_active: bool
    claimed: bool
    phrase: str = ""
    done: int = 0
    total: int = 0
    unit: str = ""

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def dataset_build_progress(*, version: DatasetVersion) -> BuildProgress:
    """The build's last recorded step (services.leases._set_progress writes {step, done,
    total}) in words: a pipeline step counts pipeline steps, syncing counts outputs, writing
    counts examples."""
    if version.status != DatasetVersion.Status.BUILDING:
        return BuildProgress(is_active=False, claimed=version.run_started_at is not None)
    if version.run_started_at is None:
        return BuildProgress(is_active=True, claimed=False)
    from .services.pipeline_run import PIPELINE_STEPS

    progress = version.progress or {}
    step = str(progress.get("step") or "")
    done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
    if step in PIPELINE_STEPS:
        index = PIPELINE_STEPS.index(step)
        return BuildProgress(
            is_active=True,
            claimed=True,
            phrase=f"Cleaning the examples: step {index + 1} of {len(PIPELINE_STEPS)} ({step})",
            done=index,
            total=len(PIPELINE_STEPS),
            unit="steps",
        )
    words, unit = _BUILD_STEP_WORDS.get(step, ("Starting the build", ""))
    return BuildProgress(
        is_active=True, claimed=True, phrase=words, done=done, total=total, unit=unit
    )
