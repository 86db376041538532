"""Build one dataset version from N resolved outputs and print the time of each step.

Each size gets a scratch database (`--db postgres`, the default, or `--db sqlite`), or the
one DATABASE_URL names, which it empties first, so that name must contain "bench".

    .venv/bin/python bench/bench_dataset_build.py                 # 10k, 30k, 100k on PostgreSQL
    .venv/bin/python bench/bench_dataset_build.py --size 100000   # then --reuse to rebuild
    .venv/bin/python bench/bench_dataset_build.py --quick --db sqlite
    .venv/bin/python bench/bench_dataset_build.py --repeat 5       # five first builds per size

The outputs are inserted with bulk_create (not timed): mostly distinct insurance-support
questions, with ~4 % exact duplicates (differing in case and spaces), ~3 % near duplicates,
~5 % carrying e-mail addresses or phone numbers, ~20 % corrected and ~15 % resolved by a
consensus of two reviewers, plus 2 % rejected (negatives). The build is timed end to end: the
sync that turns outputs into examples, loading candidates, every pipeline step, the manifest,
and the one transaction that writes the version. The builds run in a process of their own, as
in a worker, not in the one that just made the outputs (ORM objects by the million).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

TARGET_S = 10.0

TOPICS = [
    "my home insurance excess", "storm damage to the roof", "a cracked windscreen",
    "adding a named driver", "travel cover for skiing", "a burst pipe in the kitchen",
    "a stolen bicycle from the garden", "cancelling my policy", "changing my address",
    "the no claims discount", "flood damage in the basement", "lost luggage at the airport",
    "a dent from a car park", "legal cover for a dispute", "pet insurance for an older dog",
]  # fmt: skip
ASKS = [
    "Can you tell me how", "I would like to know whether", "Please explain what happens with",
    "Quick question about", "I need help understanding", "Could you check the rules for",
]  # fmt: skip
DETAILS = [
    "the policy started in", "my renewal is due in", "I have been a customer since",
    "the incident happened in", "the claim was opened in", "my premium went up in",
]  # fmt: skip
WORDS = [
    "account",
    "branch",
    "broker",
    "cover",
    "claim",
    "date",
    "detail",
    "document",
    "email",
    "excess",
    "form",
    "garage",
    "invoice",
    "letter",
    "limit",
    "notice",
    "payment",
    "phone",
    "photo",
    "premium",
    "quote",
    "receipt",
    "repair",
    "report",
    "review",
    "schedule",
    "statement",
    "survey",
    "valuation",
    "vehicle",
    "window",
]


def question(rng: random.Random, n: int) -> str:
    filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
    return (
        f"{rng.choice(ASKS)} {rng.choice(TOPICS)}? {rng.choice(DETAILS)} "
        f"{rng.randint(1990, 2026)} and my reference is {n}-{rng.randint(1000, 99999)}. "
        f"Notes: {filler}."
    )


def answer(rng: random.Random, n: int) -> str:
    filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
    return f"Thanks for asking. For reference {n}: {filler}. Anything else I can help with?"


def setup(url: str | None, *, reuse: bool, empty: bool = True) -> str:
    if not url:
        path = Path("/tmp/bench_datasets.sqlite3")
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    name = url.rsplit("/", 1)[-1]
    if "bench" not in name:
        sys.exit(f"refusing to empty {name!r}: the database name must contain 'bench'")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if not empty:
        return url
    if reuse:
        reset_builds()
        return url
    _flush_scratch_database()
    call_command("bootstrap_roles", verbosity=0)
    return url


def _flush_scratch_database() -> None:
    """Empty the bench's own scratch database, audit log included: as its owner, the bench
    lifts the log's append-only guard for the flush (docs/operations.md)."""
    from django.core.management import call_command

    from core.audit.guard import lift_audit_guard

    with lift_audit_guard():
        call_command("flush", interactive=False, verbosity=0)


def reset_builds() -> None:
    """Keep the outputs; drop what a previous build made, so the next one starts alike: a
    first build again."""
    from core.audit.guard import lift_audit_guard
    from core.models import AuditEvent, AuditHead
    from datasets_app.models import DatasetVersion, DatasetVersionExample, Example
    from reviews.models import OutputLock

    DatasetVersionExample.objects.all().delete()
    DatasetVersion.objects.update(parent=None)  # parents are PROTECTed
    DatasetVersion.objects.all().delete()
    Example.objects.all().delete()
    OutputLock.objects.all().delete()
    with lift_audit_guard():  # the bench owns its scratch database (docs/operations.md)
        AuditEvent.objects.all().delete()
    AuditHead.objects.all().delete()
    _vacuum()


def _vacuum() -> None:
    """Reclaim what the previous run left (dead rows) and refresh the planner's statistics,
    as autovacuum would between builds; not timed. Without it, repeated --reuse runs measure
    ever more bloated tables (the output table grew 10x over a dozen runs)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def fill(size: int, seed: int) -> tuple[object, float]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from reviews.models import Output, Queue, Review

    rng = random.Random(seed)
    started = time.perf_counter()
    user_model = get_user_model()
    engineer = user_model.objects.create_user("bench-engineer", password="x")
    engineer.groups.add(Group.objects.get(name="ml_engineer"))
    reviewers = [user_model.objects.create_user(f"bench-rev{i}", password="x") for i in range(5)]
    queues = [Queue.objects.get_or_create(name=f"bench-{i}")[0] for i in range(3)]
    now = timezone.now()
    outputs, kinds = [], []
    previous: list[tuple[str, str]] = []
    for n in range(size):
        roll = rng.random()
        text = answer(rng, n)
        if previous and roll < 0.04:
            prompt, text = rng.choice(previous)  # exact dup, differing in case and spaces
            prompt, text = prompt.upper().replace(" ", "  "), text.lower()
        elif previous and roll < 0.07:
            prompt = rng.choice(previous)[0] + " Thanks!"  # near dup
        else:
            prompt = question(rng, n)
            if rng.random() < 0.05:
                prompt += rng.choice(
                    [
                        f" Write to me at user{n}@example.com.",
                        f" Call me on +44 20 7946 {n % 10000:04d}.",
                    ]
                )
            previous.append((prompt, text))
            if len(previous) > 500:
                previous.pop(0)
        roll = rng.random()
        resolution = "corrected" if roll < 0.20 else "rejected" if roll < 0.22 else "approved"
        by = "consensus" if rng.random() < 0.15 else "single"
        final = text + " (corrected)" if resolution == "corrected" else text
        outputs.append(
            Output(
                source="bench",
                external_id=f"b-{n}",
                model_name="bench-model",
                model_version="v1",
                input=[{"role": "user", "content": prompt}] if n % 2 else prompt,
                output_text=text,
                status=Output.Status.RESOLVED,
                queue=queues[n % 3],
                resolution=resolution,
                resolved_by=by,
                final_output="" if resolution == "rejected" else final,
                resolved_at=now - timedelta(seconds=size - n),
                created_at=now,
                updated_at=now,
            )
        )
        kinds.append((resolution, by))
    Output.objects.bulk_create(outputs, batch_size=5000)
    ids = list(Output.objects.order_by("id").values_list("id", flat=True))
    decision = {"approved": "approve", "corrected": "correct", "rejected": "reject"}
    reviews = []
    for output_id, output, (resolution, by) in zip(ids, outputs, kinds, strict=True):
        for reviewer in reviewers[: 2 if by == "consensus" else 1]:
            reviews.append(
                Review(
                    output_id=output_id,
                    reviewer=reviewer,
                    queue=output.queue,
                    decision=decision[resolution],
                    original_output=output.output_text,
                    corrected_output=output.final_output if resolution == "corrected" else "",
                )
            )
    Review.objects.bulk_create(reviews, batch_size=5000)
    _vacuum()
    return engineer, time.perf_counter() - started


def cpu_seconds() -> tuple[float, float | None]:
    """CPU time so far of this process and of its PostgreSQL backend (None when the server is
    not on this machine). On a shared, busy machine wall times swing with the load; CPU time
    much less, so both are printed."""
    from django.db import connection

    mine = time.process_time()
    if connection.vendor != "postgresql":
        return mine, None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return mine, None
    return mine, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_once(engineer, seed: int) -> dict:
    from datasets_app import services

    timings: dict[str, float] = {}
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    version = services.dataset_version_build(
        user=engineer, name="bench", seed=seed, timings=timings
    )
    total = time.perf_counter() - started
    cpu_after = cpu_seconds()
    timings["other"] = total - sum(timings.values())
    database_cpu = (
        round(cpu_after[1] - cpu_before[1], 2)
        if cpu_after[1] is not None and cpu_before[1] is not None
        else None
    )
    return {
        "total_s": round(total, 3),
        "steps_s": {k: round(v, 3) for k, v in timings.items()},
        "cpu_python_s": round(cpu_after[0] - cpu_before[0], 2),
        "cpu_database_s": database_cpu,
        "manifest": version.manifest_hash,
        "counts": version.counts,
    }


def builds_in_own_process(seed: int) -> tuple[dict, dict]:
    """The first build and a second one over the same outputs (examples already synced), in a
    fresh interpreter on the same database."""
    done = subprocess.run(
        [sys.executable, __file__, "--builds-only", "--seed", str(seed)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the build process failed:\n{done.stderr}")
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    return first, second


def builds_only(seed: int) -> None:
    from django.contrib.auth import get_user_model

    engineer = get_user_model().objects.get(username="bench-engineer")
    runs = [build_once(engineer, seed) for _ in range(2)]
    print(json.dumps(runs))


def measure(size: int, seed: int, *, reuse: bool, repeat: int) -> dict:
    from django.core.management import call_command

    from reviews.models import Output

    if reuse:
        fill_s = 0.0
        size = Output.objects.count()
    else:
        _flush_scratch_database()
        call_command("bootstrap_roles", verbosity=0)
        _, fill_s = fill(size, seed)
    load = os.getloadavg()
    print(f"\n== {size:,} resolved outputs (inserted in {fill_s:.1f} s, not timed); "
          f"load average {load[0]:.2f}")  # fmt: skip
    first, second = builds_in_own_process(seed)
    print(f"{'step':<18}{'seconds':>9}")
    for step, seconds in first["steps_s"].items():
        print(f"{step:<18}{seconds:>9.2f}")
    print(f"{'total':<18}{first['total_s']:>9.2f}   (target < {TARGET_S:.0f} s)")
    counts = first["counts"]
    funnel = " -> ".join(f"{s['name']} {s['out']}" for s in counts["steps"])
    print(f"funnel: candidates {counts['candidates']} -> {funnel}")
    print(f"train {counts['train']}, eval {counts['eval']}, pii {counts['pii']}")
    print(f"manifest {first['manifest']}")
    print(f"CPU: Python {first['cpu_python_s']} s, database backend {first['cpu_database_s']} s")
    # The second build: examples already exist, so no sync cost.
    print(f"second build (examples already synced): {second['total_s']:.2f} s; "
          f"same manifest: {second['manifest'] == first['manifest']}")  # fmt: skip
    for run in (first, second):
        run.pop("counts")
    # This VM's speed drifts by up to ~1.7x over minutes: one build is one sample of it.
    repeats = [(first, second)]
    for _ in range(repeat - 1):
        reset_builds()
        again = builds_in_own_process(seed)
        for run in again:
            run.pop("counts")
        repeats.append(again)
    firsts = [a["total_s"] for a, _ in repeats]
    seconds = [b["total_s"] for _, b in repeats]
    if repeat > 1:
        print(f"first builds: {', '.join(f'{t:.2f}' for t in firsts)} s "
              f"(median {statistics.median(firsts):.2f}); second builds: "
              f"{', '.join(f'{t:.2f}' for t in seconds)} s "
              f"(median {statistics.median(seconds):.2f})")  # fmt: skip
    return {
        "outputs": size,
        "load_before": round(load[0], 2),
        "first": first,
        "second": second,
        "first_s": firsts,
        "second_s": seconds,
        "first_median_s": round(statistics.median(firsts), 3),
        "second_median_s": round(statistics.median(seconds), 3),
        "same_manifest": len({r["manifest"] for pair in repeats for r in pair}) == 1,
    }


def main() -> None:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        default="",
        help="comma-separated numbers of resolved outputs (default 10000,30000,100000; "
        "--quick: 5000,20000)",
    )
    parser.add_argument("--size", type=int, help="one size (same as --sizes N)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the outputs of the previous run (no insert)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="first builds per size (each after a reset; the headline is the median)",
    )
    parser.add_argument("--builds-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.builds_only:  # the child of builds_in_own_process: DATABASE_URL is set
        setup(os.environ["DATABASE_URL"], reuse=False, empty=False)
        builds_only(args.seed)
        return
    if args.size:
        sizes = [args.size]
    elif args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    else:
        sizes = [5_000, 20_000] if args.quick else [10_000, 30_000, 100_000]
    url = os.environ.get("DATABASE_URL") or common.scratch_database(
        args.db, "bench_datasets", reuse=args.reuse
    )
    setup(url, reuse=args.reuse)
    from django.db import connection

    print(f"database: {connection.vendor} ({url.rsplit('/', 1)[-1]})")
    if args.repeat < 1:
        sys.exit("--repeat: at least 1")
    rounds = [
        measure(size, args.seed, reuse=args.reuse, repeat=args.repeat)
        for size in ([0] if args.reuse else sizes)
    ]
    largest = rounds[-1]
    headlines = [
        common.headline(
            f"first build, {largest['outputs']:,} outputs, median of {len(largest['first_s'])} "
            f"({min(largest['first_s']):.2f}-{max(largest['first_s']):.2f})",
            largest["first_median_s"],
            "s",
            target=TARGET_S,
        ),
        common.headline(
            f"rebuild, {largest['outputs']:,} outputs, median of {len(largest['second_s'])}",
            largest["second_median_s"],
            "s",
        ),
    ]
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    common.write_result(
        f"dataset-build-{connection.vendor}",
        {
            "rounds": rounds,
            "headline": headlines,
            "curve": {
                "title": f"Dataset build time, {connection.vendor}",
                "x": "resolved outputs",
                "y": "seconds",
                "series": {
                    "first build (median)": [[r["outputs"], r["first_median_s"]] for r in rounds],
                    "rebuild, examples synced (median)": [
                        [r["outputs"], r["second_median_s"]] for r in rounds
                    ],
                },
                "targets": {"10 s target": TARGET_S},
            },
        },
    )


if __name__ == "__main__":
    main()
