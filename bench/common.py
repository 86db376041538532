"""Shared runner for the benchmarks: a scratch database, timing helpers, and one JSON result
file per run. Benchmarks are scripts, never part of `make test`."""

import argparse
import fcntl
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--quick", action="store_true", help="small sizes: a run of a few minutes")
    return p


def scratch_database(kind: str, name: str, *, reuse: bool = False) -> str:
    """Create an empty database for one benchmark and return its URL; `reuse` keeps one left
    by an earlier run (its filling is the slow part of the large benchmarks)."""
    if kind == "sqlite":
        path = Path("/tmp") / f"{name}.sqlite3"
        if reuse and path.exists():
            return f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return f"sqlite:///{path}"
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not (reuse and exists):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ["LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("bootstrap_roles", verbosity=0)


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples_s: Iterable[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3) if ms else None,
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else None,
    }


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.started = total, label, 0, time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        width = 30
        filled = int(width * self.done / max(1, self.total))
        rate = self.done / max(1e-9, time.perf_counter() - self.started)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} ({rate:,.0f}/s)"
        )
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    result = {"benchmark": name, "machine": machine(), "when": stamp, **result}
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nresult written to {path.relative_to(ROOT)}")
    return path


def verdict(value: float, target: float, *, lower_is_better: bool) -> str:
    ok = value <= target if lower_is_better else value >= target
    if ok:
        return "MET"
    if target == 0 or value == 0:
        return f"MISSED ({value:g} vs {target:g})"
    ratio = value / target if lower_is_better else target / value
    return f"MISSED by {ratio:.2f}x"


def headline(
    figure: str,
    value: float,
    unit: str = "",
    *,
    baseline: float | None = None,
    target: float | None = None,
    lower_is_better: bool = True,
    target_on: str = "value",
) -> dict:
    """One row of `make bench`'s summary table. `target_on="ratio"` compares the ratio
    value / baseline with the target instead of the value itself."""
    ratio = round(value / baseline, 3) if baseline else None
    row = {"figure": figure, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio}
    if target is not None:
        judged = ratio if target_on == "ratio" else value
        sign = "<=" if lower_is_better else ">="
        row["target"] = f"{sign} {target:g}{'x' if target_on == 'ratio' else ' ' + unit}".strip()
        row["verdict"] = verdict(judged, target, lower_is_better=lower_is_better)
    return row


@contextmanager
def torch_lock() -> Iterator[float]:
    """Hold the file lock SIGNOFF_TORCH_LOCK names (flock), if it names one, so that torch work
    of several benchmarks never overlaps on the cores; yields the seconds spent waiting."""
    path = os.environ.get("SIGNOFF_TORCH_LOCK")
    if not path:
        yield 0.0
        return
    started = time.monotonic()
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wait_ready(url: str, process, seconds: float = 180) -> None:
    """Until `url`/health answers 200 (an HTTP server started as `process`, which may bind
    after it said it started); exits if the process does or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited ({process.returncode})")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not get ready")
