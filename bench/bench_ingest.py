"""Bulk ingest through the API against raw `bulk_create` of the same rows.

Batches of 1,000 outputs of about 1 KB each go through Django's full request path (middleware,
token authentication, DRF, validation, routing with four rules, idempotency lookup, tags, audit
event) in-process with Django's test client; the baseline inserts the same rows with
`Output.objects.bulk_create` on the same database, no validation, no routing. The two take
turns batch by batch, and each is also reported as CPU time per batch (this process, and the
PostgreSQL backend when the server runs on this machine), which a busy machine distorts less
than wall time.

    python bench/bench_ingest.py --db postgres --batches 20
    python bench/bench_ingest.py --db sqlite --batches 20
"""

import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    headline,
    parser,
    scratch_database,
    setup_django,
    summary_ms,
    verdict,
    write_result,
)

TARGETS = {"postgres": {"outputs_per_s": 10_000, "ratio_to_baseline": 0.5}}


def backend_cpu_seconds() -> float | None:
    """CPU time used so far by this connection's PostgreSQL backend, when the server runs on
    this machine: with other work on the cores, CPU time says more than wall time."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timings:
    wall: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    server_cpu: float | None = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        server_before = backend_cpu_seconds()
        wall_before, cpu_before = time.perf_counter(), time.process_time()
        yield
        self.wall.append(time.perf_counter() - wall_before)
        self.client_cpu += time.process_time() - cpu_before
        server_after = backend_cpu_seconds()
        if server_before is None or server_after is None or self.server_cpu is None:
            self.server_cpu = None
        else:
            self.server_cpu += server_after - server_before

    def cpu_ms(self, batches: int) -> dict[str, float | None]:
        server = None if self.server_cpu is None else round(self.server_cpu * 1000 / batches, 1)
        return {"client": round(self.client_cpu * 1000 / batches, 1), "database": server}

    def cpu_line(self, batches: int) -> str:
        cpu = self.cpu_ms(batches)
        line = f"{cpu['client']:.0f} ms in this process"
        if cpu["database"] is not None:
            line += f" + {cpu['database']:.0f} ms in the PostgreSQL backend"
        return line


def make_batch(batch: int, size: int, rng: random.Random) -> list[dict]:
    filler = "The policy covers sudden and accidental damage, minus the deductible. " * 6
    rows = []
    for i in range(size):
        rows.append(
            {
                "external_id": f"b{batch}-{i}",
                "source": "bench",
                "model_name": "harbor-assistant",
                "model_version": "v1",
                "input": [
                    {"role": "system", "content": "You are Harbor Mutual's assistant."},
                    {"role": "user", "content": f"Question {i}: is water damage covered?"},
                ],
                "output": filler[: 420 + rng.randint(0, 40)],
                "confidence": round(rng.random(), 3),
                "metadata": {"channel": rng.choice(["chat", "email"]), "n": i},
                "tags": [rng.choice(["claims", "billing", "home"])],
            }
        )
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument(
        "--scratch-name", default="bench_ingest", help="scratch database (or SQLite file) name"
    )
    args = p.parse_args()
    batches = 5 if args.quick else args.batches
    setup_django(scratch_database(args.db, args.scratch_name))

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from reviews.models import Output, Queue, RoutingRule
    from reviews.services import routing_rule_save

    admin = get_user_model().objects.create(username="bench-admin", is_superuser=True)
    admin.groups.add(Group.objects.get(name="admin"))
    low = Queue.objects.create(name="low")
    audit = Queue.objects.create(name="audit")
    routing_rule_save(user=admin, name="flags", position=1, tag="billing", queue=low)
    routing_rule_save(user=admin, name="low", position=2, confidence_below=0.5, queue=low)
    routing_rule_save(user=admin, name="audit", position=3, sample_rate=0.05, queue=audit)
    routing_rule_save(user=admin, name="accept", position=4, action=RoutingRule.Action.AUTO_ACCEPT)
    token = Token.objects.create(user=admin).key
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    rng = random.Random(1)
    payloads = [json.dumps(make_batch(b, 1000, rng)) for b in range(batches + 1)]
    print(
        f"body size per batch: {len(payloads[0]) / 1024:.0f} KiB "
        f"(~{len(payloads[0]) / 1000:.0f} bytes per output)"
    )

    queue = Queue.objects.get_or_create(name="triage")[0]

    def baseline_rows(batch: int, body: str) -> list[Output]:
        return [
            Output(
                source="baseline",
                external_id=f"{batch}-{item['external_id']}",
                model_name=item["model_name"],
                model_version=item["model_version"],
                input=item["input"],
                output_text=item["output"],
                confidence=item["confidence"],
                metadata=item["metadata"],
                tags=item["tags"],
                queue=queue,
            )
            for item in json.loads(body)
        ]

    # warm-up batch for each path (first queries, caches), not timed
    assert (
        client.post("/api/outputs/", payloads[0], content_type="application/json").status_code
        == 201
    )
    Output.objects.bulk_create(baseline_rows(-1, payloads[0]), batch_size=1000)

    # The two paths take turns, batch by batch, so that both see the same table size and the
    # same load from whatever else runs on the machine.
    api, base = Timings(), Timings()
    load_before = os.getloadavg()
    for b, body in enumerate(payloads[1:]):
        with api.measure():
            response = client.post("/api/outputs/", body, content_type="application/json")
        assert response.status_code == 201, response.content[:300]
        assert response.json()["created"] == 1000

        rows = baseline_rows(b, body)
        with base.measure():
            Output.objects.bulk_create(rows, batch_size=1000)
    load_after = os.getloadavg()
    api_rate = batches * 1000 / sum(api.wall)
    base_rate = batches * 1000 / sum(base.wall)
    ratio = api_rate / base_rate

    print(f"\n== {args.db}: {batches} batches of 1,000 outputs")
    print(
        f"API (validate + route + store + audit): {api_rate:,.0f} outputs/s "
        f"(median batch {statistics.median(api.wall) * 1000:.0f} ms)"
    )
    print(
        f"baseline bulk_create:                   {base_rate:,.0f} outputs/s "
        f"(median batch {statistics.median(base.wall) * 1000:.0f} ms)"
    )
    print(f"ratio API / baseline: {ratio:.2f}")
    print(f"load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"CPU per batch, API:      {api.cpu_line(batches)}")
    print(f"CPU per batch, baseline: {base.cpu_line(batches)}")
    if args.db in TARGETS:
        t = TARGETS[args.db]
        print(
            f"target >= {t['outputs_per_s']:,}/s: "
            f"{verdict(api_rate, t['outputs_per_s'], lower_is_better=False)}; "
            f"target ratio >= {t['ratio_to_baseline']}: "
            f"{verdict(ratio, t['ratio_to_baseline'], lower_is_better=False)}"
        )
    write_result(
        f"ingest-{args.db}",
        {
            "batches": batches,
            "api_outputs_per_s": round(api_rate),
            "baseline_outputs_per_s": round(base_rate),
            "ratio": round(ratio, 3),
            "api_batch_ms": summary_ms(api.wall),
            "baseline_batch_ms": summary_ms(base.wall),
            "api_cpu_ms_per_batch": api.cpu_ms(batches),
            "baseline_cpu_ms_per_batch": base.cpu_ms(batches),
            "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
            "targets": TARGETS.get(args.db),
            "headline": [
                headline(
                    "API ingest",
                    round(api_rate),
                    "outputs/s",
                    baseline=round(base_rate),
                    target=TARGETS[args.db]["outputs_per_s"] if args.db in TARGETS else None,
                    lower_is_better=False,
                ),
                headline(
                    "API / bulk_create",
                    round(ratio, 3),
                    target=TARGETS[args.db]["ratio_to_baseline"] if args.db in TARGETS else None,
                    lower_is_better=False,
                ),
            ],
            # Each batch inserts 1,000 rows by each path, so the table grows by 2,000 a turn.
            "curve": {
                "title": f"Ingest, batches of 1,000 (~1 KB each), {args.db}",
                "x": "outputs already in the table",
                "y": "ms per batch of 1,000",
                "series": {
                    "API (validate, route, store, audit)": [
                        [2000 * (i + 1), round(t * 1000, 1)] for i, t in enumerate(api.wall)
                    ],
                    "bulk_create baseline": [
                        [2000 * (i + 1) + 1000, round(t * 1000, 1)] for i, t in enumerate(base.wall)
                    ],
                },
            },
        },
    )


if __name__ == "__main__":
    main()
