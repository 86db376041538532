"""The periodic upkeep that `manage.py run_maintenance` runs: each app registers its own steps
(sweeps of stale jobs, resends, example sync, drift checks) in its AppConfig.ready(), so the
command in core names none of them.

A step returns either a sweep result, `{action: [ids]}` ("requeued": [...]), or a count; `label`
names what a sweep swept ("training runs"), or is a format string for a count
("{n} drift alerts raised")."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MaintenanceStep:
    key: str
    order: int
    run: Callable[[], dict[str, list[Any]] | int]
    label: str


_steps: dict[str, MaintenanceStep] = {}


def maintenance_step(*, key: str, order: int, label: str, run: Callable[[], Any]) -> None:
    """Register (or replace) one step; `order` fixes when it runs in a pass."""
    _steps[key] = MaintenanceStep(key=key, order=order, run=run, label=label)


def maintenance_steps() -> list[MaintenanceStep]:
    return sorted(_steps.values(), key=lambda step: step.order)


def maintenance_once() -> dict[str, Any]:
    """One pass: every step, in order. Each is idempotent, so overlapping passes are harmless."""
    return {step.key: step.run() for step in maintenance_steps()}


def _parts(done: dict[str, Any]) -> list[str]:
    parts = []
    for step in maintenance_steps():
        result = done.get(step.key)
        if isinstance(result, dict):
            for action, ids in result.items():
                if ids:
                    parts.append(f"{step.label} {action}: {', '.join(str(pk) for pk in ids)}")
        elif result:
            parts.append(step.label.format(n=result))
    return parts


def is_busy(done: dict[str, Any]) -> bool:
    return bool(_parts(done))


def describe(done: dict[str, Any]) -> str:
    """One line naming only what this pass did, for a terminal people read (the demo's)."""
    parts = _parts(done)
    return "maintenance: " + ("; ".join(parts) if parts else "nothing to do")
