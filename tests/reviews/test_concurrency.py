"""Many reviewers claiming from one queue at once: nobody gets an item twice, nothing is lost."""

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from reviews.models import Lease, Output, Review
from reviews.services import queue_claim_next, review_submit

from ..factories import OutputFactory, QueueFactory
from ..waiting import join_threads


def run_claimers(queue, users):
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))

    def work(user):
        try:
            start.wait()
            while True:
                lease = queue_claim_next(queue=queue, user=user)
                if lease is None:
                    return
                with lock:
                    claimed.append(lease.output_id)
                review_submit(lease_id=lease.pk, user=user, decision="approve")
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    join_threads(threads, what="the claimers to empty the queue", progress=lambda: len(claimed))
    return claimed, errors


def check(queue, items, claimed, errors):
    assert errors == [], errors[:3]
    duplicates = [output for output, n in Counter(claimed).items() if n > 1]
    assert duplicates == []
    assert len(claimed) == items
    assert Output.objects.filter(queue=queue, status="resolved").count() == items
    assert Review.objects.filter(queue=queue).count() == items
    assert Lease.objects.filter(queue=queue).count() == items


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sixteen_threads_claim_without_duplicates_on_postgres(make_user):
    assert connection.vendor == "postgresql"
    queue = QueueFactory(name="hot")
    items = 600
    OutputFactory.create_batch(items, queue=queue)
    users = [make_user("reviewer", username=f"pg-r{i}") for i in range(16)]
    claimed, errors = run_claimers(queue, users)
    check(queue, items, claimed, errors)


@pytest.mark.django_db(transaction=True)
def test_eight_threads_claim_without_duplicates_or_lock_errors(make_user):
    queue = QueueFactory(name="hot")
    items = 240
    OutputFactory.create_batch(items, queue=queue)
    users = [make_user("reviewer", username=f"r{i}") for i in range(8)]
    claimed, errors = run_claimers(queue, users)
    check(queue, items, claimed, errors)
