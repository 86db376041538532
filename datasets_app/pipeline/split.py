"""Split train/eval by seeded content hash, then move every cluster of same or near-duplicate
inputs that spans both splits wholly to train (leakage)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from .dedup import InputGraph, build_input_graph
from .items import Item, StepReport, seeded_rank


def step_split(
    items: list[Item], *, seed: int, eval_fraction: float, stratify: str = ""
) -> StepReport:
    """Unstratified: an example is in eval when its seeded hash falls below the fraction, so
    its split never depends on which other examples exist (it keeps its split as data grows).
    Stratified: in each stratum the lowest-ranked round(n * fraction) go to eval."""
    report = StepReport("split", len(items), len(items), extra={"eval_fraction": eval_fraction})
    for item in items:
        item.split = "train"
    if eval_fraction <= 0 or not items:
        return report
    ranks = [seeded_rank(seed, "split", item.content_hash) for item in items]

    def order(index: int) -> tuple[int, str]:
        return ranks[index], items[index].content_hash

    if stratify:
        report.extra["stratify"] = stratify
        strata: dict[str, list[Item]] = defaultdict(list)
        for index in sorted(range(len(items)), key=order):
            item = items[index]
            strata[(item.values(stratify) or [""])[0]].append(item)
        for members in strata.values():
            for item in members[: round(len(members) * eval_fraction)]:
                item.split = "eval"
    else:
        limit = int(eval_fraction * 2**64)
        for item, rank in zip(items, ranks, strict=True):
            if rank < limit:
                item.split = "eval"
    if len(items) >= 2 and not any(item.split == "eval" for item in items):
        items[min(range(len(items)), key=order)].split = "eval"  # a tiny set still gets one
    return report


def step_leakage(
    items: list[Item], graph: InputGraph, group_index: Callable[[Item], int], *, threshold: float
) -> StepReport:
    """Guarantee that no eval input equals or nearly equals a train input: every connected
    cluster of same / near-duplicate inputs that spans both splits moves wholly to train."""
    report = StepReport("leakage", len(items), len(items), extra={"threshold": threshold})
    by_group: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_group[group_index(item)].append(item)
    seen: set[int] = set()
    moved = 0
    # A cluster can span both splits only if it has two items: a group of two or more, or a
    # group with a near-duplicate neighbour. Lone items are passed over.
    clusters = (g for g, members in by_group.items() if len(members) > 1 or g in graph.edges)
    for start in sorted(clusters):
        if start in seen:
            continue
        component, stack = [], [start]
        seen.add(start)
        while stack:
            group = stack.pop()
            component.append(group)
            for other in graph.neighbours(group, threshold):
                if other in by_group and other not in seen:
                    seen.add(other)
                    stack.append(other)
        members = [item for g in component for item in by_group[g]]
        if len({item.split for item in members}) > 1:
            for item in members:
                if item.split == "eval":
                    item.split = "train"
                    moved += 1
                    report.samples.append({"moved_to_train": item.example_id})
    report.changed = moved
    if moved:
        report.reasons["eval input duplicates a train input: moved to train"] = moved
    return report


def leaking_pairs(
    items: list[Item], *, threshold: float, ngram: int
) -> list[tuple[int, int, float]]:
    """Independent check: (eval example id, train example id, similarity) for every eval input
    that is the same as, or a near duplicate of, a train input. Empty when the split is clean.
    Compares every eval item with every train item: meant for tests and small sets."""
    graph = build_input_graph(items, threshold=threshold, ngram=ngram)
    out = []
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            if a.split != "eval" or b.split != "train":
                continue
            ga, gb = graph.group_of[i], graph.group_of[j]
            sim = 1.0 if ga == gb else graph.edges.get(ga, {}).get(gb)
            if sim is not None and sim >= threshold:
                out.append((a.example_id, b.example_id, sim))
    return out
