"""Claim-next latency and correctness under concurrent reviewers.

Each reviewer is its own process with its own database connection, looping over the real
services: `queue_claim_next` then `review_submit(approve)`. Pending items sit beside a large
number of finished ones in the same table. Reports median / p95 / p99 of the claim (and of the
decision), duplicate claims counted from the database, and the claim query's plan.

    python bench/bench_claims.py --db postgres                 # 10k, 100k, 1M pending + 5M done
    python bench/bench_claims.py --db sqlite                   # 10k, 100k pending, 8 reviewers
    python bench/bench_claims.py --db postgres --quick
    python bench/bench_claims.py --db postgres --reuse         # keep the filled database
"""

import multiprocessing as mp
import time

from common import (
    Progress,
    headline,
    parser,
    scratch_database,
    setup_django,
    summary_ms,
    verdict,
    write_result,
)

TARGETS = {
    "postgres": {"p95_ms": 15.0, "p99_ms": 50.0},
    "sqlite": {"p95_ms": 50.0},
}

PG_FILL = """
INSERT INTO reviews_output (source, external_id, model_name, model_version, input, output_text,
    confidence, metadata, tags, priority, status, queue_id, routing_reason, reviews_done,
    resolution, resolved_by, final_output, is_gold, created_at, updated_at, resolved_at)
SELECT 'bench', %(prefix)s || i, 'bench-model', 'v1', '"What is my deductible?"'::jsonb,
    'On a standard policy the collision deductible is $500. Next step: check the app.',
    0.5, '{}'::jsonb, '[]'::jsonb, (i %% 3), %(status)s, %(queue)s, 'bench', %(done)s,
    %(resolution)s, %(resolved_by)s, '', false,
    now() - (i * interval '1 millisecond'), now(), %(resolved_at)s
FROM generate_series(1, %(n)s) AS i
"""

SQLITE_FILL = """
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %(n)s)
INSERT INTO reviews_output (source, external_id, model_name, model_version, input, output_text,
    confidence, metadata, tags, priority, status, queue_id, routing_reason, reviews_done,
    resolution, resolved_by, final_output, is_gold, created_at, updated_at, resolved_at)
SELECT 'bench', %(prefix)s || i, 'bench-model', 'v1', '"What is my deductible?"',
    'On a standard policy the collision deductible is $500. Next step: check the app.',
    0.5, '{}', '[]', (i %% 3), %(status)s, %(queue)s, 'bench', %(done)s,
    %(resolution)s, %(resolved_by)s, '', 0,
    strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || i || ' seconds'),
    strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now'), %(resolved_at)s
FROM seq
"""


def fill(queue_id: int, n: int, *, finished: bool, prefix: str) -> None:
    from django.db import connection, transaction

    sql = PG_FILL if connection.vendor == "postgresql" else SQLITE_FILL
    chunk = 500_000
    bar = Progress(n, f"loading {'finished' if finished else 'pending'}")
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        params = {
            "prefix": f"{prefix}-{start}-",
            "n": size,
            "queue": queue_id,
            "status": "resolved" if finished else "pending",
            "done": 1 if finished else 0,
            "resolution": "approved" if finished else "",
            "resolved_by": "single" if finished else "",
            "resolved_at": None,
        }
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
        bar.advance(size)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def reviewer_loop(user_id: int, queue_id: int, claims: int, counter, out) -> None:
    from django.contrib.auth import get_user_model
    from django.db import OperationalError, connections

    from reviews.models import Queue
    from reviews.services import queue_claim_next, review_submit

    connections.close_all()  # never share the parent's connection after fork
    user = get_user_model().objects.get(pk=user_id)
    queue = Queue.objects.get(pk=queue_id)
    claim_times, decide_times, locked_errors, other_errors = [], [], 0, []
    while True:
        with counter.get_lock():
            if counter.value >= claims:
                break
            counter.value += 1
        try:
            t0 = time.perf_counter()
            lease = queue_claim_next(queue=queue, user=user)
            t1 = time.perf_counter()
            if lease is None:
                break
            review_submit(lease_id=lease.pk, user=user, decision="approve")
            t2 = time.perf_counter()
        except OperationalError as error:
            if "locked" in str(error):
                locked_errors += 1
                if locked_errors == 1:
                    import traceback

                    traceback.print_exc()
                continue
            other_errors.append(repr(error))
            continue
        claim_times.append(t1 - t0)
        decide_times.append(t2 - t1)
    connections.close_all()
    out.put((claim_times, decide_times, locked_errors, other_errors))


def run_round(queue_id: int, users: list[int], claims: int) -> dict:
    from django.db import connections

    connections.close_all()
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=reviewer_loop, args=(uid, queue_id, claims, counter, out))
        for uid in users
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    claim_times, decide_times, locked, errors = [], [], 0, []
    for _ in procs:
        c, d, lk, err = out.get()
        claim_times += c
        decide_times += d
        locked += lk
        errors += err
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    return {
        "claims": len(claim_times),
        "seconds": round(elapsed, 2),
        "claims_per_s": round(len(claim_times) / elapsed, 1),
        "claim": summary_ms(claim_times),
        "claim_and_decide": summary_ms(
            [a + b for a, b in zip(claim_times, decide_times, strict=True)]
        ),
        "locked_errors_reaching_user": locked,
        "other_errors": errors[:5],
    }


def duplicate_claims(queue_id: int) -> tuple[int, int]:
    """(items two reviewers held at once, items claimed again after a lease expired unused).
    Only the first is a duplicate claim; the second happens when a reviewer walks away (or a
    benchmark process was killed) and the item is rightly handed to someone else."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(DISTINCT a.output_id) FROM reviews_lease a JOIN reviews_lease b "
            "ON a.output_id = b.output_id AND a.id <> b.id AND a.claimed_at <= b.claimed_at "
            "AND b.claimed_at < COALESCE(a.ended_at, a.expires_at) "
            "WHERE a.queue_id = %s AND a.is_gold = %s AND b.is_gold = %s",
            [queue_id, False, False],
        )
        overlapping = cursor.fetchone()[0]
        cursor.execute(
            "SELECT COUNT(*) FROM (SELECT output_id FROM reviews_lease WHERE queue_id = %s "
            "AND is_gold = %s GROUP BY output_id HAVING COUNT(*) > 1) d",
            [queue_id, False],
        )
        return overlapping, cursor.fetchone()[0] - overlapping


def claim_plan(queue_id: int, user_id: int) -> str:
    import uuid

    from django.db import connection, transaction

    from reviews.models import Queue
    from reviews.services import leases

    queue = Queue.objects.get(pk=queue_id)
    scope = leases._SCOPE_QUEUE
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + leases._PG_CLAIM.format(scope=scope),
                {
                    "lease": uuid.uuid4(),
                    "queue": queue_id,
                    "user": user_id,
                    "seconds": queue.lease_seconds,
                },
            )
        else:
            from django.utils import timezone

            now = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(
                "EXPLAIN QUERY PLAN " + leases._SQLITE_CLAIM.format(scope=scope),
                {
                    "lease": uuid.uuid4().hex,
                    "queue": queue_id,
                    "user": user_id,
                    "now": now,
                    "expires": now,
                },
            )
        plan = "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())
        transaction.set_rollback(True)  # EXPLAIN ANALYZE really ran the UPDATE
    return plan


def main() -> None:
    p = parser(__doc__)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database an earlier run filled (pending items are topped up)",
    )
    args = p.parse_args()
    postgres = args.db == "postgres"
    if postgres:
        sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
        finished = 500_000 if args.quick else 5_000_000
        reviewers = 16
    else:
        sizes = [10_000, 100_000]
        finished = 100_000 if args.quick else 500_000
        reviewers = 8
    claims_per_round = 3_000 if args.quick else 10_000

    setup_django(scratch_database(args.db, f"bench_claims_{finished}", reuse=args.reuse))
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from reviews.models import Output, Queue

    queue, _ = Queue.objects.get_or_create(name="bench", defaults={"lease_seconds": 600})
    group = Group.objects.get(name="reviewer")
    users = []
    for i in range(reviewers):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-reviewer-{i}")
        user.groups.add(group)
        users.append(user.pk)

    finished_now = Output.objects.filter(queue=queue, status="resolved").count()
    if finished_now < finished:
        fill(queue.pk, finished - finished_now, finished=True, prefix=f"done{finished_now}")
    rounds, loaded = [], 0
    for size in sizes:
        pending_now = Output.objects.filter(queue=queue, status="pending").count()
        if size > pending_now:
            fill(queue.pk, size - pending_now, finished=False, prefix=f"p{size}-{int(time.time())}")
        loaded = size
        print(
            f"\n== {args.db}: {size:,} pending beside {finished:,} finished, "
            f"{reviewers} reviewers, {claims_per_round:,} claims"
        )
        result = run_round(queue.pk, users, min(claims_per_round, size // 2))
        result["pending"] = size
        rounds.append(result)
        c = result["claim"]
        print(
            f"claim  median {c['median_ms']} ms  p95 {c['p95_ms']} ms  p99 {c['p99_ms']} ms  "
            f"({result['claims_per_s']} claims+decisions/s)"
        )
        both = result["claim_and_decide"]
        print(f"claim+decide median {both['median_ms']} ms  p95 {both['p95_ms']} ms")
        print(
            f"'database is locked' reaching a reviewer: {result['locked_errors_reaching_user']}"
            f"; other errors: {len(result['other_errors'])}"
        )

    duplicates, reclaimed = duplicate_claims(queue.pk)
    plan = claim_plan(queue.pk, users[0])
    largest = rounds[-1]["claim"]
    targets = TARGETS[args.db]
    print(f"\nduplicate claims (two live leases on one item, from the database): {duplicates}")
    print(f"items claimed again after an abandoned lease expired: {reclaimed}")
    print(f"claim plan at {loaded:,} pending:\n{plan}")
    print("\ntargets at the largest size:")
    for key, target in targets.items():
        print(
            f"  {key}: {largest[key]} vs {target} -> "
            f"{verdict(largest[key], target, lower_is_better=True)}"
        )
    headlines = [
        headline(f"claim {key[:-3]} at {loaded:,} pending", largest[key], "ms", target=target)
        for key, target in targets.items()
    ]
    headlines.append(headline("duplicate claims", duplicates, target=0))
    if not postgres:
        locked = sum(r["locked_errors_reaching_user"] for r in rounds)
        headlines.append(headline("'database is locked' reaching a reviewer", locked, target=0))
    write_result(
        f"claims-{args.db}",
        {
            "reviewers": reviewers,
            "finished_rows": finished,
            "rounds": rounds,
            "duplicate_claims": duplicates,
            "reclaimed_after_expiry": reclaimed,
            "plan": plan,
            "targets": targets,
            "headline": headlines,
            "curve": {
                "title": f"Claim latency, {reviewers} reviewers, {args.db} "
                f"({finished:,} finished rows beside)",
                "x": "pending outputs",
                "y": "claim latency (ms)",
                "xscale": "log",
                "series": {
                    label: [[r["pending"], r["claim"][key]] for r in rounds]
                    for label, key in (
                        ("median", "median_ms"),
                        ("p95", "p95_ms"),
                        ("p99", "p99_ms"),
                    )
                },
                "targets": {f"{key[:-3]} target": t for key, t in targets.items()},
            },
        },
    )


if __name__ == "__main__":
    main()
