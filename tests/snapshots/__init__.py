"""Committed snapshots of what the project shows the outside (the OpenAPI schema, every URL, the
management commands) and the comparison that fails with a readable list of what changed.

Issue 16 moves code between apps with no change anyone can see: these snapshots were taken
before the move, so any difference is either a mistake or a change made on purpose. To accept a
change on purpose, rewrite the snapshots and commit them with the change:

    SIGNOFF_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_layout_snapshots.py
"""

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FOLDER = Path(__file__).resolve().parent
UPDATE_VARIABLE = "SIGNOFF_UPDATE_SNAPSHOTS"
REFRESH_COMMAND = f"{UPDATE_VARIABLE}=1 .venv/bin/python -m pytest tests/test_layout_snapshots.py"
# A diff longer than this is cut: the first lines already say where to look.
MOST_LINES_SHOWN = 150
LONGEST_VALUE_SHOWN = 160


def check_snapshot(name: str, current: Any) -> None:
    """Compare `current` with the committed snapshot `name`; rewrite the snapshot instead when
    SIGNOFF_UPDATE_SNAPSHOTS=1."""
    path = FOLDER / name
    # As JSON would store it (tuples become lists), so equal things compare equal.
    current = json.loads(json.dumps(current))
    if os.environ.get(UPDATE_VARIABLE) == "1":
        path.write_text(json.dumps(current, indent=2, ensure_ascii=False) + "\n")
        return
    if not path.is_file():
        pytest.fail(f"No snapshot {path.relative_to(FOLDER.parent.parent)}: run {REFRESH_COMMAND}")
    recorded = json.loads(path.read_text())
    if recorded == current:
        return
    lines = list(differences(recorded, current))
    shown = lines[:MOST_LINES_SHOWN]
    if len(lines) > len(shown):
        shown.append(f"... and {len(lines) - len(shown)} more")
    pytest.fail(
        f"{name} changed ({len(lines)} difference{'' if len(lines) == 1 else 's'}; "
        "- recorded, + now, ~ changed):\n"
        + "\n".join(shown)
        + f"\n\nIf the change is meant, refresh the snapshots and commit them:\n"
        f"    {REFRESH_COMMAND}",
        pytrace=False,
    )


def differences(recorded: Any, current: Any, where: str = "") -> Iterator[str]:
    """One line per difference, each naming where it is (`paths['/api/x/'].get.parameters`).

    Lists are compared as collections: an element added or removed shows once, not as every
    later element shifted by one place."""
    if recorded == current:
        return
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in recorded.keys() - current.keys():
            yield f"- {_key(where, key)}: {_short(recorded[key])}"
        for key in current.keys() - recorded.keys():
            yield f"+ {_key(where, key)}: {_short(current[key])}"
        for key in recorded.keys() & current.keys():
            yield from differences(recorded[key], current[key], _key(where, key))
        return
    if isinstance(recorded, list) and isinstance(current, list):
        yield from _list_differences(recorded, current, where)
        return
    yield f"~ {where or '(top)'}: {_short(recorded)} -> {_short(current)}"


def _list_differences(recorded: list, current: list, where: str) -> Iterator[str]:
    if (
        len(recorded) == len(current)
        and all(
            isinstance(a, dict) and isinstance(b, dict)
            for a, b in zip(recorded, current, strict=True)
        )
        and _same_identities(recorded, current)
    ):
        # The same objects in the same places (parameters, say): name the fields that changed.
        for index, (a, b) in enumerate(zip(recorded, current, strict=True)):
            yield from differences(a, b, f"{where}[{index}]")
        return
    # Compared by content whatever the order of their keys; shown as they were written.
    shown = {_canonical(item): item for item in [*recorded, *current]}
    before = Counter(_canonical(item) for item in recorded)
    after = Counter(_canonical(item) for item in current)
    removed, added = before - after, after - before
    for item in sorted(removed.elements()):
        yield f"- {where or '(top)'}[]: {_short(shown[item])}"
    for item in sorted(added.elements()):
        yield f"+ {where or '(top)'}[]: {_short(shown[item])}"
    if not removed and not added:
        yield f"~ {where or '(top)'}: the same elements in another order"


def _same_identities(recorded: list[dict], current: list[dict]) -> bool:
    """Whether two lists of objects hold the same objects by their identifying fields (an
    OpenAPI parameter is identified by its name and place)."""

    def identity(item: dict) -> tuple:
        return tuple(item.get(key) for key in ("name", "in", "route", "$ref"))

    return [identity(a) for a in recorded] == [identity(b) for b in current] and any(
        any(value is not None for value in identity(item)) for item in recorded
    )


def _key(where: str, key: str) -> str:
    return (
        f"{where}.{key}"
        if key.isidentifier() and where
        else (key if key.isidentifier() else f"{where}[{key!r}]")
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > LONGEST_VALUE_SHOWN:
        return text[: LONGEST_VALUE_SHOWN - 3] + "..."
    return text
