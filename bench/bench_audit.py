"""Claim + decide through the services with many reviewers, against the raw SQL claim + update
in the same run: what the audit log's lock cost (issue 19) and what the sealer gives back.

Each reviewer is its own process and connection looping over `queue_claim_next` then
`review_submit(approve)` (bench_claims.reviewer_loop); the baseline does the one-statement
`FOR UPDATE SKIP LOCKED` claim and a decide UPDATE in raw SQL, same number of processes. Then
the sealer seals the backlog the round left and the chain is verified, whole and from a head.

    python bench/bench_audit.py                        # PostgreSQL, 16 reviewers
    python bench/bench_audit.py --verify-events 1000000  # also time sealing + verifying 1M events

The code before the sealer has no audit_seal: run this same file from a checkout of it to
measure the old path with the same figures (docs/benchmarks.md, §1b, gives the commands).
"""

import multiprocessing as mp
import time

from bench_claims import fill, run_round
from common import parser, scratch_database, setup_django, summary_ms, write_result

RAW_CLAIM = """
UPDATE reviews_output SET status = 'escalated', updated_at = now()
 WHERE id = (SELECT id FROM reviews_output WHERE queue_id = %(queue)s AND status = 'pending'
              ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
RAW_DECIDE = """
UPDATE reviews_output SET status = 'resolved', resolution = 'approved', resolved_at = now(),
       reviews_done = reviews_done + 1 WHERE id = %(id)s
"""


def raw_loop(url: str, queue_id: int, claims: int, counter, out) -> None:
    import psycopg

    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            with counter.get_lock():
                if counter.value >= claims:
                    break
                counter.value += 1
            t0 = time.perf_counter()
            row = conn.execute(RAW_CLAIM, {"queue": queue_id}).fetchone()
            if row is None:
                break
            conn.execute(RAW_DECIDE, {"id": row[0]})
            times.append(time.perf_counter() - t0)
    out.put(times)


def raw_round(url: str, queue_id: int, workers: int, claims: int) -> dict:
    from django.db import connections

    connections.close_all()
    ctx = mp.get_context("fork")
    counter, out = ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(target=raw_loop, args=(url, queue_id, claims, counter, out))
        for _ in range(workers)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    times = []
    for _ in procs:
        times += out.get()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    return {
        "claims": len(times),
        "seconds": round(elapsed, 2),
        "claims_per_s": round(len(times) / elapsed, 1),
        "claim_and_decide": summary_ms(times),
    }


def seal_and_verify() -> dict:
    """The sealer's side: the backlog the round left, sealed, then verified whole and from the
    head taken before the round. None of it on the code before the sealer."""
    try:
        from core.audit import audit_seal, audit_verify, audit_verify_since
    except ImportError:
        return {"sealer": "absent (code before the sealer: events sealed inline)"}
    from core.models import AuditEvent, AuditHead

    unsealed = AuditEvent.objects.filter(seq__isnull=True).count()
    t0 = time.perf_counter()
    sealed = audit_seal().sealed
    seal_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    events = audit_verify(seal=False)
    full_s = time.perf_counter() - t0
    head = AuditHead.objects.get()
    t0 = time.perf_counter()
    audit_verify_since(seq=max(head.seq - 1000, 1), head_hash=_hash_of(max(head.seq - 1000, 1)))
    since_s = time.perf_counter() - t0
    return {
        "unsealed_after_round": unsealed,
        "sealed": sealed,
        "seal_s": round(seal_s, 3),
        "seal_events_per_s": round(sealed / seal_s, 1) if seal_s and sealed else None,
        "events": events,
        "verify_full_s": round(full_s, 3),
        "verify_last_1000_s": round(since_s, 3),
    }


def _hash_of(seq: int) -> str:
    from core.models import AuditEvent

    return AuditEvent.objects.values_list("hash", flat=True).get(seq=seq)


def many_events(n: int) -> dict:
    """Write n events unsealed in SQL (as n appenders would have), then time sealing them,
    verifying the whole chain, and verifying the last 1,000 from a head."""
    from django.db import connection, transaction

    from core.audit import audit_seal, audit_verify, audit_verify_since
    from core.models import AuditHead

    chunk = 200_000
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO reviews_auditevent (created_at, actor_name, action, object_type, "
                "object_id, payload) SELECT now(), 'system', 'bench.event', 'output', i::text, "
                "jsonb_build_object('n', i, 'decision', 'approve', 'queue', 'bench') "
                "FROM generate_series(%s, %s) AS i",
                [start + 1, min(start + chunk, n)],
            )
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sealed = audit_seal().sealed
    seal_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    events = audit_verify(seal=False)
    full_s = time.perf_counter() - t0
    head = AuditHead.objects.get()
    anchor = max(head.seq - 1000, 1)
    t0 = time.perf_counter()
    audit_verify_since(seq=anchor, head_hash=_hash_of(anchor))
    since_s = time.perf_counter() - t0
    return {
        "events_written": n,
        "insert_s": round(insert_s, 2),
        "sealed": sealed,
        "seal_s": round(seal_s, 2),
        "seal_events_per_s": round(sealed / seal_s, 1),
        "events": events,
        "verify_full_s": round(full_s, 2),
        "verify_last_1000_s": round(since_s, 3),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--pending", type=int, default=20_000)
    p.add_argument("--claims", type=int, default=5_000, help="claims per round")
    p.add_argument("--label", default="", help="names the scratch database and the result")
    p.add_argument("--verify-events", type=int, default=0, help="also seal + verify N events")
    args = p.parse_args()
    if args.db != "postgres":
        raise SystemExit("the audit lock showed on PostgreSQL: run with --db postgres")
    url = scratch_database("postgres", f"bench_audit{args.label and '_' + args.label}")
    setup_django(url)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from reviews.models import Queue

    group = Group.objects.get(name="reviewer")
    users = []
    for i in range(args.workers):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-reviewer-{i}")
        user.groups.add(group)
        users.append(user.pk)
    services_queue = Queue.objects.create(name="bench-services", lease_seconds=600)
    raw_queue = Queue.objects.create(name="bench-raw", lease_seconds=600)
    fill(services_queue.pk, args.pending, finished=False, prefix="s")
    fill(raw_queue.pk, args.pending, finished=False, prefix="r")

    print(f"\n== {args.workers} workers, {args.pending:,} pending, {args.claims:,} claims each")
    raw = raw_round(url, raw_queue.pk, args.workers, args.claims)
    print(
        f"raw SQL claim + update: {raw['claims_per_s']} /s  "
        f"p95 {raw['claim_and_decide']['p95_ms']} ms"
    )
    services = run_round(services_queue.pk, users, args.claims)
    both = services["claim_and_decide"]
    print(
        f"services claim + decide: {services['claims_per_s']} /s  median {both['median_ms']} ms  "
        f"p95 {both['p95_ms']} ms  p99 {both['p99_ms']} ms  errors {len(services['other_errors'])}"
    )
    ratio = round(services["claims_per_s"] / raw["claims_per_s"], 3)
    print(f"services / raw: {ratio}x (issue 19's target: >= 0.5x)")
    sealing = seal_and_verify()
    print(f"sealer: {sealing}")
    large = many_events(args.verify_events) if args.verify_events else None
    if large:
        print(f"{args.verify_events:,} events: {large}")
    write_result(
        f"audit{args.label and '-' + args.label}",
        {
            "workers": args.workers,
            "pending": args.pending,
            "raw": raw,
            "services": services,
            "ratio": ratio,
            "sealing": sealing,
            "many_events": large,
        },
    )


if __name__ == "__main__":
    main()
