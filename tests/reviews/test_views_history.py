"""'My reviews' and undoing the last decision from the pages."""

import pytest
from django.urls import reverse
from django.utils import timezone

from reviews.models import Lease, Output, OutputLock, Review
from reviews.services import queue_claim_next, review_submit

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(personas):
    return QueueFactory(name="low-confidence")


def decide(queue, user, decision="approve", **kwargs):
    lease = queue_claim_next(queue=queue, user=user)
    return review_submit(lease_id=lease.pk, user=user, decision=decision, **kwargs)


def test_my_reviews_lists_only_mine_with_undo_on_the_last(client, personas, queue):
    OutputFactory.create_batch(3, queue=queue)
    first = decide(queue, personas["reviewer"], "reject", reason="Wrong topic entirely.")
    last = decide(
        queue, personas["reviewer"], "correct", corrected_output="A better answer altogether."
    )
    theirs = decide(queue, personas["reviewer2"], "approve")
    client.force_login(personas["reviewer"])
    html = client.get(reverse("my-reviews")).content.decode()
    assert f"#{first.output_id}" in html and f"#{last.output_id}" in html
    assert f"#{theirs.output_id}" not in html
    assert "Wrong topic entirely." in html and "<ins>" in html
    assert reverse("review-undo", args=[last.pk]) in html
    assert reverse("review-undo", args=[first.pk]) not in html


def test_undo_reopens_the_item_in_the_workbench(client, personas, queue):
    OutputFactory.create_batch(2, queue=queue)
    review = decide(queue, personas["reviewer"], "approve")
    client.force_login(personas["reviewer"])
    response = client.post(reverse("review-undo", args=[review.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("queue-work", args=[queue.pk])
    review.refresh_from_db()
    assert review.undone_at is not None
    output = Output.objects.get(pk=review.output_id)
    assert output.status == Output.Status.PENDING
    html = response.content.decode()
    assert "Decision undone" in html
    assert f"Item #{review.output_id}" in html  # the reopened item, not a new claim
    assert Lease.objects.filter(reviewer=personas["reviewer"], ended_at__isnull=True).count() == 1


def test_undo_from_the_workbench_gives_back_the_item_shown(client, personas, queue):
    OutputFactory.create_batch(3, queue=queue)
    client.force_login(personas["reviewer"])
    client.get(reverse("queue-work", args=[queue.pk]))
    lease = Lease.objects.get(reviewer=personas["reviewer"])
    client.post(reverse("lease-decide", args=[lease.pk]), {"decision": "approve"})
    shown = Lease.objects.get(reviewer=personas["reviewer"], ended_at__isnull=True)
    review = Review.objects.get()
    response = client.post(
        reverse("review-undo", args=[review.pk]), {"release_lease": str(shown.pk)}, follow=True
    )
    assert f"Item #{review.output_id}" in response.content.decode()
    shown.refresh_from_db()
    assert shown.end_reason == Lease.EndReason.RELEASED
    assert Output.objects.get(pk=shown.output_id).lease_id is None


def test_undo_is_refused_once_the_item_is_in_a_dataset(client, personas, queue):
    OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "approve")
    OutputLock.objects.create(output_id=review.output_id, locked_at=timezone.now())
    client.force_login(personas["reviewer"])
    response = client.post(reverse("review-undo", args=[review.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("my-reviews")
    assert "Could not undo" in response.content.decode()
    review.refresh_from_db()
    assert review.undone_at is None


def test_nobody_undoes_someone_elses_decision(client, personas, queue):
    OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "approve")
    client.force_login(personas["reviewer2"])
    response = client.post(reverse("review-undo", args=[review.pk]), follow=True)
    assert "Could not undo" in response.content.decode()
    review.refresh_from_db()
    assert review.undone_at is None
