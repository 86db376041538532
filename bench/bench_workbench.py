"""Server side of the reviewer's loop in the workbench: "submit a decision + load the next item".

One reviewer works a queue of 10,000 pending items through the real views, as htmx drives
them: each step POSTs the decision for the item on screen and gets back the panel with the next
item (review_submit, the audit chain, the next claim and the template render, all in one
request). The lease id of the next step is read from the returned HTML, as the browser does.
Most decisions approve; every 10th corrects the text, every 25th rejects with a reason. Times
exclude the browser and the network; the first 20 requests are warm-up.

    python bench/bench_workbench.py                 # SQLite file DB, 10,000 items, 1,000 decisions
    python bench/bench_workbench.py --db postgres
    python bench/bench_workbench.py --quick         # 2,000 items, 200 decisions
"""

import os
import re
import time

from common import (
    headline,
    parser,
    scratch_database,
    setup_django,
    summary_ms,
    verdict,
    write_result,
)

TARGET_P95_MS = 50.0
WARMUP = 20
LEASE_IN_PANEL = re.compile(r'data-lease="([0-9a-f-]{36})"')

GUIDELINES = """# Support answers

- **Approve** when the answer is correct and complete.
- **Correct** when the facts or the style are off.
- **Reject** when it cannot be salvaged; say why.
"""


def fill_queue(queue, n: int) -> None:
    from reviews.models import Output

    rows = [
        Output(
            source="bench",
            external_id=f"wb-{i:06d}",
            model_name="harbor-assistant",
            model_version="v1",
            input=[
                {"role": "system", "content": "You are Harbor Mutual's support assistant."},
                {"role": "user", "content": f"What is the collision deductible? (case {i})"},
            ],
            output_text=(
                "On a standard auto policy the collision deductible is $1,000 unless you chose "
                f"a different amount. Your exact figure is on the declarations page. ({i})"
            ),
            confidence=0.3 + (i % 60) / 100,
            metadata={"channel": "chat", "customer_tier": "plus" if i % 2 else "standard"},
            tags=["policy", "deductible"],
            priority=i % 3,
            queue=queue,
            routing_reason="bench",
        )
        for i in range(n)
    ]
    Output.objects.bulk_create(rows, batch_size=2000)


def decision_for(step: int, panel: str) -> dict[str, str]:
    if step % 10 == 0:
        match = re.search(r'id="original-output">([^<]*)<', panel)
        original = match.group(1) if match else "the answer"
        return {
            "decision": "correct",
            "corrected_output": original.replace("$1,000", "$500") + " Next step: check the app.",
        }
    if step % 25 == 0:
        return {"decision": "reject", "reason": "Quotes the wrong deductible."}
    return {"decision": "approve"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(db="sqlite")
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--decisions", type=int, default=1_000)
    args = p.parse_args()
    if args.quick:
        args.items, args.decisions = 2_000, 200

    # Production-like request handling: no debug page machinery, no query log.
    os.environ["DEBUG"] = "0"
    setup_django(scratch_database(args.db, "signoff_bench_workbench"))
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from reviews.models import Queue, Review
    from reviews.services import guidelines_publish

    reviewer = User.objects.create_user("bench-reviewer", password="x")
    reviewer.groups.add(Group.objects.get(name="reviewer"))
    lead = User.objects.create_user("bench-lead", password="x")
    lead.groups.add(Group.objects.get(name="lead"))
    queue = Queue.objects.create(name="bench-workbench", lease_seconds=300)
    guidelines_publish(queue=queue, user=lead, text=GUIDELINES)
    started = time.perf_counter()
    fill_queue(queue, args.items)
    print(f"{args.items:,} items in the queue ({time.perf_counter() - started:.1f} s to create)")

    client = Client(SERVER_NAME="localhost")
    client.force_login(reviewer)
    panel = client.get(reverse("queue-work", args=[queue.pk])).content.decode()
    samples: list[float] = []
    for step in range(1, args.decisions + WARMUP + 1):
        lease_id = LEASE_IN_PANEL.search(panel).group(1)
        data = decision_for(step, panel)
        url = reverse("lease-decide", args=[lease_id])
        began = time.perf_counter()
        response = client.post(url, data, HTTP_HX_REQUEST="true")
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, (response.status_code, data)
        panel = response.content.decode()
        if step > WARMUP:
            samples.append(elapsed)

    decided = Review.objects.filter(queue=queue).count()
    assert decided == args.decisions + WARMUP, decided
    stats = summary_ms(samples)
    print(
        f"submit decision + load next item ({connection.vendor}, {args.items:,} items, "
        f"{stats['n']} requests): median {stats['median_ms']:.2f} ms, "
        f"p95 {stats['p95_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, max {stats['max_ms']:.2f} ms"
    )
    print(
        f"target p95 < {TARGET_P95_MS:.0f} ms: "
        f"{verdict(stats['p95_ms'], TARGET_P95_MS, lower_is_better=True)}"
    )
    write_result(
        f"workbench-{args.db}",
        {
            "items": args.items,
            "decisions": args.decisions,
            "decide_and_next": stats,
            "target_p95_ms": TARGET_P95_MS,
            "headline": [
                headline("submit + next item p95", stats["p95_ms"], "ms", target=TARGET_P95_MS)
            ],
        },
    )


if __name__ == "__main__":
    main()
