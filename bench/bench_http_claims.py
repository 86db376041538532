"""Claim -> approve over HTTP against the real server, with API tokens.

Starts the server as it is run for real, then drives N reviewer clients (one process and one
keep-alive connection each) that loop: POST /api/queues/{id}/claim/, then POST /api/reviews/
with {"lease": ..., "decision": "approve"}. Prints p50 / p95 / p99 of the claim (next item) and
of claim + approve, and the throughput.

    python bench/bench_http_claims.py --db sqlite                 # runserver, dev settings
    python bench/bench_http_claims.py --db postgres               # gunicorn, production settings
    python bench/bench_http_claims.py --db sqlite --quick         # 10,000 pending, 800 claims

`--db sqlite` serves as `make demo` does: `manage.py runserver --noreload` with
config.settings.dev (DEBUG on). `--db postgres` runs gunicorn with deploy/gunicorn.conf.py and
config.settings.production (DEBUG off; HTTPS redirect off, since there is no proxy here).
"""

import http.client
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

from common import ROOT, headline, parser, scratch_database, setup_django, summary_ms, verdict
from common import write_result as write

TARGETS = {"sqlite": 80.0, "postgres": 40.0}  # next-item p95, ms (issue 19)


def client_loop(port: int, token: str, queue_id: int, claims: int, counter, out) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    claim_times, both_times, errors = [], [], []
    while True:
        with counter.get_lock():
            if counter.value >= claims:
                break
            counter.value += 1
        t0 = time.perf_counter()
        conn.request("POST", f"/api/queues/{queue_id}/claim/", body=b"", headers=headers)
        response = conn.getresponse()
        body = response.read()
        t1 = time.perf_counter()
        if response.status == 204:
            break
        if response.status != 200:
            errors.append(f"claim {response.status}: {body[:200]!r}")
            continue
        lease = json.loads(body)["lease"]["id"]
        payload = json.dumps({"lease": lease, "decision": "approve"}).encode()
        conn.request("POST", "/api/reviews/", body=payload, headers=headers)
        response = conn.getresponse()
        body = response.read()
        t2 = time.perf_counter()
        if response.status != 201:
            errors.append(f"review {response.status}: {body[:200]!r}")
            continue
        claim_times.append(t1 - t0)
        both_times.append(t2 - t0)
    conn.close()
    out.put((claim_times, both_times, errors))


def run_clients(port: int, tokens: list[str], queue_id: int, claims: int) -> dict:
    ctx = mp.get_context("fork")
    counter, out = ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(target=client_loop, args=(port, token, queue_id, claims, counter, out))
        for token in tokens
    ]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    for p in procs:
        p.start()
    claim_times, both_times, errors = [], [], []
    for _ in procs:
        c, b, e = out.get()
        claim_times += c
        both_times += b
        errors += e
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    return {
        "clients": len(tokens),
        "claims": len(claim_times),
        "seconds": round(elapsed, 2),
        "claims_per_s": round(len(claim_times) / elapsed, 1),
        "claim": summary_ms(claim_times),
        "claim_and_approve": summary_ms(both_times),
        "errors": len(errors),
        "first_errors": errors[:5],
        "load_average_at_start": round(load, 2),
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }


def start_server(db: str, url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    if db == "sqlite":
        env |= {
            "DJANGO_SETTINGS_MODULE": "config.settings.dev",
            "SIGNOFF_SERVER_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    else:
        env |= {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "bench-only-secret-key-bench-only-secret-key-0123456789",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "SIGNOFF_WEB_BIND": f"127.0.0.1:{port}",
            "SIGNOFF_WEB_ACCESS_LOG": "/dev/null",
        }
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        command = [gunicorn, "-c", "deploy/gunicorn.conf.py"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health/")
            conn.getresponse().read()
            conn.close()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}") from None
            time.sleep(0.3)
    stop_server(server)
    raise SystemExit("the server did not answer within 60 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--pending", type=int, default=100_000)
    p.add_argument("--claims", type=int, default=3_000)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--label", default="", help="names the scratch database and the result")
    args = p.parse_args()
    pending = 10_000 if args.quick else args.pending
    claims = 800 if args.quick else args.claims
    url = scratch_database(args.db, f"bench_http_claims{args.label and '_' + args.label}")
    setup_django(url)
    from bench_claims import fill
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from reviews.models import Queue

    group = Group.objects.get(name="reviewer")
    tokens = []
    for i in range(args.clients):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-http-{i}")
        user.groups.add(group)
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    queue = Queue.objects.create(name="bench-http", lease_seconds=600)
    fill(queue.pk, pending, finished=False, prefix="h")
    connections.close_all()

    server_kind = "runserver (config.settings.dev)" if args.db == "sqlite" else "gunicorn"
    print(f"\n== {args.db}, {server_kind}: {args.clients} clients, {pending:,} pending")
    server = start_server(args.db, url, args.port)
    try:
        run_clients(args.port, tokens[:1], queue.pk, 50)  # warm the server's code paths
        result = run_clients(args.port, tokens, queue.pk, claims)
    finally:
        stop_server(server)
    c, b = result["claim"], result["claim_and_approve"]
    target = TARGETS[args.db]
    print(f"next item (claim): p50 {c['median_ms']} ms  p95 {c['p95_ms']} ms  p99 {c['p99_ms']} ms")
    print(f"claim + approve:   p50 {b['median_ms']} ms  p95 {b['p95_ms']} ms  p99 {b['p99_ms']} ms")
    print(
        f"throughput {result['claims_per_s']} claim+approve/s; errors {result['errors']}; "
        f"load average {result['load_average_at_start']} -> {result['load_average_at_end']}"
    )
    print(
        f"target next-item p95 <= {target} ms: {verdict(c['p95_ms'], target, lower_is_better=True)}"
    )
    for line in result["first_errors"]:
        print("  error:", line)
    write(
        f"http-claims-{args.db}{args.label and '-' + args.label}",
        {
            "server": server_kind,
            "pending": pending,
            **result,
            "headline": [
                headline(
                    f"HTTP next-item p95, {args.clients} clients, {pending:,} pending, {args.db}",
                    c["p95_ms"],
                    "ms",
                    target=target,
                ),
                headline("HTTP claim+approve throughput", result["claims_per_s"], "/s"),
            ],
        },
    )


if __name__ == "__main__":
    main()
