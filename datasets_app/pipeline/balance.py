"""Balance: cap how many examples a label, tag, source or queue keeps (a seeded draw)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .items import Item, StepReport, seeded_rank

BALANCE_DIMENSIONS = ("label", "tag", "source", "queue")


def step_balance(
    items: list[Item], *, caps: dict[str, dict[str, int]], seed: int
) -> tuple[list[Item], StepReport, dict[str, Any]]:
    """Cap how many examples any one label / tag / source / queue keeps ("*" caps every value
    of a dimension). Which ones stay is a seeded draw from content hashes."""
    report = StepReport("balance", len(items), 0)

    def tally(rows: list[Item]) -> dict[str, dict[str, int]]:
        dims = sorted(set(caps) | {"label"})
        out: dict[str, dict[str, int]] = {}
        for dim in dims:
            counter: Counter = Counter()
            for item in rows:
                counter.update(item.values(dim))
            out[dim] = dict(sorted(counter.items()))
        return out

    before = tally(items)
    if not caps:
        report.count_out = len(items)
        return items, report, {"caps": {}, "before": before, "after": before}
    used: dict[str, Counter] = {dim: Counter() for dim in caps}
    keep_ids: set[int] = set()
    for item in sorted(items, key=lambda it: seeded_rank(seed, "balance", it.content_hash)):
        over = None
        for dim, limits in caps.items():
            for value in item.values(dim):
                cap = limits.get(value, limits.get("*"))
                if cap is not None and used[dim][value] >= cap:
                    over = f"{dim}={value} cap {cap}"
                    break
            if over:
                break
        if over:
            report.reasons[over] += 1
            continue
        for dim in caps:
            used[dim].update(item.values(dim))
        keep_ids.add(id(item))
    kept = [item for item in items if id(item) in keep_ids]
    report.count_out = len(kept)
    return kept, report, {"caps": caps, "before": before, "after": tally(kept)}
