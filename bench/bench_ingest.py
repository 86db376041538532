"""Bulk ingest through the API against raw `bulk_create` of the same rows.

Batches of 1,000 outputs of about 1 KB each go through Django's full request path (middleware,
token authentication, DRF, validation, routing with four rules, idempotency lookup, tags, audit
event) in-process; the baseline inserts the same rows with `Output.objects.bulk_create` on the
same database, no validation, no routing.

    python bench/bench_ingest.py --db postgres --batches 20
    python bench/bench_ingest.py --db sqlite --batches 20
"""

import json
import random
import time

from common import parser, scratch_database, setup_django, verdict, write_result

TARGETS = {"postgres": {"outputs_per_s": 10_000, "ratio_to_baseline": 0.5}}


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
    args = p.parse_args()
    batches = 5 if args.quick else args.batches
    setup_django(scratch_database(args.db, "bench_ingest"))

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

    # warm-up batch (first queries, caches), not timed
    assert (
        client.post("/api/outputs/", payloads[0], content_type="application/json").status_code
        == 201
    )
    api_times = []
    for body in payloads[1:]:
        t0 = time.perf_counter()
        response = client.post("/api/outputs/", body, content_type="application/json")
        api_times.append(time.perf_counter() - t0)
        assert response.status_code == 201, response.content[:300]
    api_rate = batches * 1000 / sum(api_times)

    # Baseline: the same rows, straight into the table.
    base_times = []
    queue = (
        Queue.objects.get(name="triage")
        if Queue.objects.filter(name="triage").exists()
        else Queue.objects.create(name="triage")
    )
    for b, body in enumerate(payloads[1:]):
        rows = [
            Output(
                source="baseline",
                external_id=f"{b}-{item['external_id']}",
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
        t0 = time.perf_counter()
        Output.objects.bulk_create(rows, batch_size=1000)
        base_times.append(time.perf_counter() - t0)
    base_rate = batches * 1000 / sum(base_times)
    ratio = api_rate / base_rate

    print(f"\n== {args.db}: {batches} batches of 1,000 outputs")
    print(
        f"API (validate + route + store + audit): {api_rate:,.0f} outputs/s "
        f"(median batch {sorted(api_times)[len(api_times) // 2] * 1000:.0f} ms)"
    )
    print(f"baseline bulk_create:                   {base_rate:,.0f} outputs/s")
    print(f"ratio API / baseline: {ratio:.2f}")
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
            "targets": TARGETS.get(args.db),
        },
    )


if __name__ == "__main__":
    main()
