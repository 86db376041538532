"""Run every benchmark in turn (`make bench`, or `make bench QUICK=1` for a run of minutes),
then print one table of headline figures against their baselines and targets, write it to
bench/results/summary-<stamp>.md, and draw a plot per benchmark into docs/benchmarks/.

Each script stays runnable on its own; this only sequences them (one at a time, so they do not
measure each other) and reads the JSON result each one writes. A result may carry:

    "headline": [{"figure": "claim p95", "value": 4.1, "unit": "ms", "baseline": null,
                  "ratio": null, "target": "<= 15 ms", "verdict": "MET"}, ...]
    "curve": {...}            (see plot.py)

    .venv/bin/python bench/run_all.py [--quick] [--only claims,ingest]
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from plot import derived, plot_result

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# name, script arguments for the full run, for the quick run, and whether it needs PostgreSQL.
BENCHMARKS: list[tuple[str, list[str], list[str], bool]] = [
    (
        "claims-postgres",
        ["bench_claims.py", "--db", "postgres"],
        ["bench_claims.py", "--db", "postgres", "--quick"],
        True,
    ),
    (
        "claims-sqlite",
        ["bench_claims.py", "--db", "sqlite"],
        ["bench_claims.py", "--db", "sqlite", "--quick"],
        False,
    ),
    (
        "ingest-postgres",
        ["bench_ingest.py", "--db", "postgres"],
        ["bench_ingest.py", "--db", "postgres", "--quick"],
        True,
    ),
    (
        "ingest-sqlite",
        ["bench_ingest.py", "--db", "sqlite"],
        ["bench_ingest.py", "--db", "sqlite", "--quick"],
        False,
    ),
    (
        "http-claims-sqlite",
        ["bench_http_claims.py", "--db", "sqlite"],
        ["bench_http_claims.py", "--db", "sqlite", "--quick"],
        False,
    ),
    (
        "http-claims-postgres",
        ["bench_http_claims.py", "--db", "postgres"],
        ["bench_http_claims.py", "--db", "postgres", "--quick"],
        True,
    ),
    (
        "dataset-build",
        ["bench_dataset_build.py", "--db", "postgres"],
        ["bench_dataset_build.py", "--db", "postgres", "--quick"],
        True,
    ),
    (
        "workbench",
        ["bench_workbench.py", "--db", "sqlite"],
        ["bench_workbench.py", "--db", "sqlite", "--quick"],
        False,
    ),
    # 40 steps a side, once: the full comparison within the hour on 2 CPU cores.
    (
        "training",
        ["bench_training.py", "--steps", "40", "--repeats", "1"],
        ["bench_training.py", "--quick"],
        False,
    ),
    ("orchestration", ["bench_orchestration.py"], ["bench_orchestration.py", "--quick"], False),
    (
        "generate",
        ["bench_generate.py", "--repeats", "1"],
        ["bench_generate.py", "--quick"],
        False,
    ),
    # Issue 22: the default recipe on 40-320 corrections (2 seeds: ~35 min on 2 quiet cores),
    # then one turn of the loop through the API against run_demo's processes (~15 min).
    (
        "small-data",
        ["bench_small_data.py", "--seeds", "2"],
        ["bench_small_data.py", "--quick"],
        False,
    ),
    ("loop", ["bench_loop.py"], ["bench_loop.py", "--quick"], False),
    (
        "loop-offline",
        ["bench_loop_offline.py"],
        ["bench_loop_offline.py", "--n", "24", "--pairs", "101:202"],
        False,
    ),
]


def postgres_answers() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


def run_one(args: list[str], log) -> tuple[int, list[Path]]:
    """Run one script, echo its output, and return its exit code and the result files it wrote."""
    written: list[Path] = []
    proc = subprocess.Popen(
        [PYTHON, str(BENCH / args[0]), *args[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        log.write(line)
        found = re.search(r"result written to (\S+\.json)", line)
        if found:
            written.append(ROOT / found.group(1))
    return proc.wait(), written


def headline_rows(result_path: Path) -> list[dict]:
    import json

    result = json.loads(result_path.read_text())
    rows = result.get("headline") or derived(result)[0]
    return [dict(benchmark=result["benchmark"], **row) for row in rows]


def fmt(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_table(rows: list[dict]) -> str:
    lines = [
        "| benchmark | figure | value | baseline | ratio | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = f" {row['unit']}" if row.get("unit") else ""
        baseline = fmt(row.get("baseline"))
        lines.append(
            f"| {row['benchmark']} | {row['figure']} | {fmt(row.get('value'))}{unit} "
            f"| {baseline}{unit if baseline else ''} | {fmt(row.get('ratio'))} "
            f"| {row.get('target') or ''} | {row.get('verdict') or ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    p.add_argument("--only", default="", help="comma-separated names (default: all)")
    args = p.parse_args()
    only = {name for name in args.only.split(",") if name}
    unknown = only - {name for name, *_ in BENCHMARKS}
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log_path = RESULTS / f"run-{stamp}.log"
    have_postgres = postgres_answers()
    rows, failures, skipped = [], [], []
    started = time.perf_counter()
    with log_path.open("w") as log:
        for name, full, quick, needs_postgres in BENCHMARKS:
            if only and name not in only:
                continue
            if needs_postgres and not have_postgres:
                skipped.append(f"{name} (PostgreSQL not reachable at {PG_ADMIN_URL})")
                continue
            banner = f"\n######## {name} ({'quick' if args.quick else 'full'}) ########\n"
            print(banner, flush=True)
            log.write(banner)
            t0 = time.perf_counter()
            code, written = run_one(quick if args.quick else full, log)
            seconds = time.perf_counter() - t0
            if code != 0:
                failures.append(f"{name} exited {code}")
            for path in written:
                rows += headline_rows(path)
                plotted = plot_result(path)
                if plotted:
                    print(f"plot: {plotted.relative_to(ROOT)}")
            print(f"({name}: {seconds:,.0f} s)")

    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    table = summary_table(rows)
    footer = [
        f"Run {stamp}, {'quick' if args.quick else 'full'}, "
        f"{time.perf_counter() - started:,.0f} s in all; load average after: {' '.join(load)}.",
        *(f"Skipped: {s}" for s in skipped),
        *(f"FAILED: {f}" for f in failures),
    ]
    text = table + "\n\n" + "\n".join(footer) + "\n"
    summary_path = RESULTS / f"summary-{stamp}.md"
    summary_path.write_text(text)
    print("\n" + text)
    print(f"summary written to {summary_path.relative_to(ROOT)}; log: {log_path.relative_to(ROOT)}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
