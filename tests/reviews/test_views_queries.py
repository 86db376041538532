"""Query budgets of the workbench's hot paths: an N+1 query fails here, not in production."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reviews.models import Lease
from reviews.services import escalation_queue, guidelines_publish, queue_claim_next, review_submit

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
# session, user, the user's groups, the queue, held lease?, claim (+ lease row), its item,
# guidelines; PostgreSQL adds the clock read and savepoints. Measured, plus a little room.
CLAIM_BUDGET = 14
DECIDE_AND_NEXT_BUDGET = 34


@pytest.fixture
def queue(personas):
    queue = QueueFactory(name="low-confidence")
    guidelines_publish(queue=queue, user=personas["lead"], text="**Approve** when right.")
    return queue


def rich_output(queue, n):
    return OutputFactory(
        queue=queue,
        input=[{"role": "user", "content": f"q{i}"} for i in range(n)],
        metadata={f"key{i}": i for i in range(n)},
        tags=[f"tag{i}" for i in range(n)],
    )


def test_opening_the_workbench_claims_within_a_fixed_budget(
    client, personas, queue, django_assert_max_num_queries
):
    rich_output(queue, 20)
    client.force_login(personas["reviewer"])
    with django_assert_max_num_queries(CLAIM_BUDGET):
        response = client.get(reverse("queue-work", args=[queue.pk]))
    assert response.status_code == 200 and Lease.objects.count() == 1


def count_queries(call) -> int:
    with CaptureQueriesContext(connection) as queries:
        call()
    return len(queries)


def test_claim_queries_do_not_grow_with_the_item(client, personas, queue):
    rich_output(queue, 1)
    rich_output(queue, 30)
    client.force_login(personas["reviewer"])
    url = reverse("queue-work", args=[queue.pk])
    small = count_queries(lambda: client.get(url))
    lease = Lease.objects.get()
    skip = reverse("lease-skip", args=[lease.pk])
    big = count_queries(lambda: client.post(skip, **HTMX))
    assert Lease.objects.filter(ended_at__isnull=True).get().output.tags[0] == "tag0"
    # skip = claim + release; the item shown must not add a query per message, key or tag
    assert big <= small + 6, (small, big)


def test_decide_and_next_stays_within_budget(
    client, personas, queue, django_assert_max_num_queries
):
    rich_output(queue, 5)
    rich_output(queue, 5)
    client.force_login(personas["reviewer"])
    client.get(reverse("queue-work", args=[queue.pk]))
    lease = Lease.objects.get()
    with django_assert_max_num_queries(DECIDE_AND_NEXT_BUDGET):
        response = client.post(
            reverse("lease-decide", args=[lease.pk]), {"decision": "approve"}, **HTMX
        )
    assert response.status_code == 200


def test_the_leads_view_of_earlier_reviews_is_one_query_however_many(client, personas):
    triple = QueueFactory(name="triple", required_reviews=3)
    escalations = escalation_queue()
    reviewers = [personas["reviewer"], personas["reviewer2"], personas["admin"]]
    for n_reviews in (1, 3):
        output = OutputFactory(queue=triple, priority=n_reviews)
        for user in reviewers[:n_reviews]:
            lease = queue_claim_next(queue=triple, user=user)
            assert lease.output_id == output.pk
            decision = "escalate" if user is reviewers[n_reviews - 1] else "approve"
            review_submit(lease_id=lease.pk, user=user, decision=decision, reason="why")
    client.force_login(personas["lead"])
    url = reverse("queue-work", args=[escalations.pk])
    first = count_queries(lambda: client.get(url))  # priority 3: three earlier reviews
    assert "Earlier reviews (3)" in client.get(url).content.decode()
    lease = Lease.objects.filter(reviewer=personas["lead"], ended_at__isnull=True).get()
    skip = reverse("lease-skip", args=[lease.pk])
    with CaptureQueriesContext(connection) as queries:
        html = client.post(skip, **HTMX).content.decode()
    assert "Earlier reviews (1)" in html
    assert first <= CLAIM_BUDGET + 1
    assert len(queries) <= first + 6  # skip adds its release, not a query per review
