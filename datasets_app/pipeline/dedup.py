"""Duplicates: exact (the same messages ignoring case and whitespace) and near (inputs whose
word n-gram Jaccard similarity reaches the threshold). The keeper of each cluster is chosen by
`keeper_key`, so it is the same on every run."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .items import Item, StepReport, content_hash, keeper_key
from .jaccard import _join_pairs, _shingle_pairs

_SPACE_RE = re.compile(r"\s+")


def _loose(text: str) -> str:
    # str.split() splits on exactly the characters \s matches (str.isspace), so this equals
    # _SPACE_RE.sub(" ", text).strip(), at a third of the cost.
    return " ".join(text.split()).casefold()


def _loose_turns(item: Item) -> list[str]:
    return [f"{m['role']}\x1f{_loose(m['content'])}" for m in item.messages]


def exact_key(item: Item) -> str:
    """Messages compared ignoring case and whitespace."""
    return "\x1e".join(_loose_turns(item))


def input_key(item: Item) -> str:
    return "\x1e".join(_loose_turns(item)[:-1])


def assign_hashes(items: list[Item]) -> None:
    for item in items:
        item.content_hash = content_hash(item.messages, item.rejected_text)


def step_exact_dedup(items: list[Item]) -> tuple[list[Item], StepReport]:
    report = StepReport("exact_dedup", len(items), 0)
    best: dict[str, Item] = {}
    keys: list[str] = []
    for item in items:
        # Each text is folded once for both keys: near dedup groups by the input key.
        turns = _loose_turns(item)
        item.input_key = "\x1e".join(turns[:-1])
        key = "\x1e".join(turns)
        keys.append(key)
        current = best.get(key)
        if current is None or keeper_key(item) < keeper_key(current):
            best[key] = item
    kept_ids = {id(item) for item in best.values()}
    kept = [item for item in items if id(item) in kept_ids]
    for item, key in zip(items, keys, strict=True):
        if id(item) not in kept_ids:
            keeper = best[key]
            report.reasons["same messages ignoring case and whitespace"] += 1
            report.samples.append({"removed": item.example_id, "kept": keeper.example_id})
    report.count_out = len(kept)
    return kept, report


@dataclass
class InputGraph:
    """Items grouped by identical (loose) input; edges join groups whose inputs' word n-gram
    Jaccard similarity is at least the join threshold, with the similarity."""

    group_of: list[int]  # item index -> group
    edges: dict[int, dict[int, float]]

    def neighbours(self, group: int, threshold: float) -> Iterable[int]:
        return (g for g, sim in self.edges.get(group, {}).items() if sim >= threshold)


def build_input_graph(items: list[Item], *, threshold: float, ngram: int) -> InputGraph:
    groups: dict[str, int] = {}
    group_of: list[int] = []
    group_texts: list[str] = []
    for item in items:
        key = item.input_key or input_key(item)
        group = groups.get(key)
        if group is None:
            group = groups[key] = len(group_texts)
            group_texts.append(item.prompt_text)
        group_of.append(group)
    owner, element, distinct = _shingle_pairs(group_texts, ngram)
    edges: dict[int, dict[int, float]] = defaultdict(dict)
    for a, b, sim in _join_pairs(owner, element, len(group_texts), distinct, threshold):
        edges[a][b] = sim
        edges[b][a] = sim
    return InputGraph(group_of=group_of, edges=dict(edges))


def step_near_dedup(
    items: list[Item], graph: InputGraph, *, threshold: float
) -> tuple[list[Item], StepReport]:
    """Greedy in keeper order: an item goes if an already kept item has the same input or a
    near-duplicate input. So no two survivors are near duplicates, and the keeper of each
    cluster is the same on every run."""
    report = StepReport("near_dedup", len(items), 0, extra={"threshold": threshold})
    keys = [keeper_key(item) for item in items]
    group_of = graph.group_of
    edges = graph.edges
    kept_groups: dict[int, int] = {}
    keep = [False] * len(items)
    for index in sorted(range(len(items)), key=keys.__getitem__):
        item = items[index]
        group = group_of[index]
        holder = kept_groups.get(group)
        if holder is None:
            if group in edges:
                near = graph.neighbours(group, threshold)
                holder = next((kept_groups[g] for g in near if g in kept_groups), None)
            reason = "near-duplicate input"
        else:
            reason = "same input"
        if holder is not None:
            report.reasons[reason] += 1
            report.samples.append({"removed": item.example_id, "kept": holder, "why": reason})
            continue
        kept_groups[group] = item.example_id
        keep[index] = True
    kept = [item for item, kept_it in zip(items, keep, strict=True) if kept_it]
    report.count_out = len(kept)
    return kept, report
