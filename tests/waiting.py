"""Waiting in tests on events and on progress, never on a machine's speed.

A fixed deadline ("180 s for the run to resume") encodes how fast the machine that wrote the
test was; under load the same work takes ten or fifty times longer and the test fails although
nothing is wrong. Here a wait ends when its condition holds, and fails only when

- nothing has moved for `stall` seconds: the `progress` snapshot (a run's step, attempt and
  heartbeat, the size of a log, the CPU time of processes still starting) stayed the same, or
- `limit` seconds passed in all, while things kept moving without getting there.

Both are generous by default (10 and 60 minutes); a quiet machine never waits for them, since
polling stays short. The failure says what was last seen. SIGNOFF_TEST_STALL_SECONDS and
SIGNOFF_TEST_WAIT_LIMIT_SECONDS change the defaults (a CI that wants quicker failures, say).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

STALL_SECONDS = float(os.environ.get("SIGNOFF_TEST_STALL_SECONDS", 600))
LIMIT_SECONDS = float(os.environ.get("SIGNOFF_TEST_WAIT_LIMIT_SECONDS", 3600))
# One request that is expected to answer (nothing to watch meanwhile): as long as a stall.
REQUEST_SECONDS = STALL_SECONDS
# One browser action or expectation on a page that is already there (a click, a field, a
# heading after a submit): pages answer in well under a second on an idle machine. A wait on
# background work goes through wait_for instead.
BROWSER_ACTION_SECONDS = float(os.environ.get("SIGNOFF_TEST_BROWSER_ACTION_SECONDS", 120))
POLL_SECONDS = 0.1
PROGRESS_EVERY_SECONDS = 1.0


class WaitTimeout(AssertionError):
    """A wait that saw no progress for its stall period, or ran past its overall limit."""


def wait_for(
    condition: Callable[[], Any],
    *,
    what: str,
    progress: Callable[[], Any] | None = None,
    describe: Callable[[], str] | None = None,
    each: Callable[[], Any] | None = None,
    stall: float | None = None,
    limit: float | None = None,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], Any] = time.sleep,
) -> Any:
    """Poll `condition` until it returns something truthy, and return that.

    `progress()` returns any comparable snapshot of the work under way; each change starts the
    stall period again. Without it nothing can be seen moving, so the wait is one stall period
    long. `describe()` says what was last seen, for the failure message (it defaults to the
    progress snapshot). `each()` runs before every poll (a sweep, as a cron job would run it).
    `sleep` pauses between polls (a browser test passes the page's own wait)."""
    stall = STALL_SECONDS if stall is None else stall
    limit = max(LIMIT_SECONDS if limit is None else limit, stall)
    started = moved = looked = time.monotonic()
    last = progress() if progress is not None else None
    while True:
        if each is not None:
            each()
        value = condition()
        if value:
            return value
        now = time.monotonic()
        # Looked at about once a second however short the poll: it may cost a query.
        if progress is not None and now - looked >= PROGRESS_EVERY_SECONDS:
            looked = now
            seen = progress()
            if seen != last:
                last, moved = seen, now
        if now - moved >= stall or now - started >= limit:
            why = (
                f"nothing moved for {now - moved:.0f} s"
                if now - moved >= stall
                else f"still not there after {now - started:.0f} s although it kept moving"
            )
            seen_text = describe() if describe is not None else f"progress {last!r}"
            raise WaitTimeout(
                f"gave up waiting for {what}: {why} (waited {now - started:.0f} s); "
                f"last seen: {seen_text}"
            )
        sleep(poll)


def join_threads(
    threads: Iterable[threading.Thread],
    *,
    what: str,
    progress: Callable[[], Any] | None = None,
    describe: Callable[[], str] | None = None,
) -> None:
    """Wait until every thread has ended; fails (naming those still alive) on a stall."""
    threads = list(threads)

    def alive() -> list[str]:
        return [thread.name for thread in threads if thread.is_alive()]

    wait_for(
        lambda: not alive(),
        what=what,
        progress=progress,
        describe=lambda: f"alive: {alive()}" + (f"; {describe()}" if describe else ""),
        poll=0.02,
    )


def cpu_ticks(pids: Iterable[int]) -> int:
    """CPU time (user + system, clock ticks) the processes used so far; 0 for one that is gone.
    A process still importing torch or loading a model moves this even when it writes nothing."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def file_sizes(paths: Iterable[Path]) -> tuple[int, ...]:
    """The sizes of log files (0 for one not written yet): a log that grows is progress."""
    sizes = []
    for path in paths:
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(0)
    return tuple(sizes)
