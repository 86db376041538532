"""Every quality step of `datasets_app.pipeline` over a build's candidates, with the counts that
the version records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import pipeline
from .build_settings import BuildSettings

PIPELINE_STEPS = ["normalise", "pii", "exact dedup", "near dedup", "length", "balance", "split"]


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
        items, mode=settings.pii, patterns=settings.pii_patterns, allow=settings.pii_allow
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
