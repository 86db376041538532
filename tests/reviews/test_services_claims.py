import random
from datetime import timedelta

import pytest
from django.utils import timezone

from core.roles import Role
from reviews.errors import LeaseLost, QueueForbidden
from reviews.models import Lease, Output, Queue
from reviews.services import (
    lease_release,
    lease_renew,
    output_mark_gold,
    queue_claim_next,
    review_submit,
)

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(personas):
    return QueueFactory(name="claims", lease_seconds=60)


def expire(lease: Lease) -> None:
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease.pk).update(expires_at=past)
    Output.objects.filter(lease_id=lease.pk).update(lease_expires_at=past)


def test_it_serves_the_most_urgent_then_oldest(queue, personas):
    old = OutputFactory(queue=queue)
    urgent = OutputFactory(queue=queue, priority=5)
    OutputFactory(queue=queue)
    first = queue_claim_next(queue=queue, user=personas["reviewer"])
    second = queue_claim_next(queue=queue, user=personas["reviewer2"])
    assert first.output_id == urgent.pk
    assert second.output_id == old.pk


def test_a_leased_item_is_not_served_twice(queue, personas):
    OutputFactory(queue=queue)
    assert queue_claim_next(queue=queue, user=personas["reviewer"]) is not None
    assert queue_claim_next(queue=queue, user=personas["reviewer2"]) is None


def test_the_lease_is_recorded_on_the_output_and_the_lease_row(queue, personas):
    output = OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    output.refresh_from_db()
    assert output.lease_id == lease.pk
    assert lease.reviewer == personas["reviewer"]
    assert 55 <= (lease.expires_at - lease.claimed_at).total_seconds() <= 61


def test_an_expired_lease_returns_the_item_to_the_queue(queue, personas):
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    expire(lease)
    taken_over = queue_claim_next(queue=queue, user=personas["reviewer2"])
    assert taken_over.output_id == lease.output_id


def test_a_late_submit_after_expiry_is_refused_and_changes_nothing(queue, personas):
    output = OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    expire(lease)
    with pytest.raises(LeaseLost):
        review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")
    output.refresh_from_db()
    assert output.status == Output.Status.PENDING
    assert output.reviews.count() == 0


def test_a_late_submit_after_takeover_is_refused(queue, personas):
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    expire(lease)
    queue_claim_next(queue=queue, user=personas["reviewer2"])
    # even if the first lease row were renewed by a clock skew, the output points elsewhere
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    with pytest.raises(LeaseLost, match="Another reviewer"):
        review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")


def test_renew_extends_the_lease(queue, personas):
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + timedelta(seconds=5))
    Output.objects.filter(lease_id=lease.pk).update(
        lease_expires_at=timezone.now() + timedelta(seconds=5)
    )
    renewed = lease_renew(lease_id=lease.pk, user=personas["reviewer"])
    assert renewed.renewals == 1
    assert renewed.expires_at > timezone.now() + timedelta(seconds=50)
    assert Output.objects.get(pk=lease.output_id).lease_expires_at == renewed.expires_at


def test_an_expired_lease_cannot_be_renewed(queue, personas):
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    expire(lease)
    with pytest.raises(LeaseLost):
        lease_renew(lease_id=lease.pk, user=personas["reviewer"])


def test_someone_elses_lease_cannot_be_renewed_released_or_used(queue, personas):
    from core.errors import PermissionRefused

    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    with pytest.raises(PermissionRefused):
        lease_renew(lease_id=lease.pk, user=personas["reviewer2"])
    with pytest.raises(PermissionRefused):
        lease_release(lease_id=lease.pk, user=personas["reviewer2"])
    with pytest.raises(PermissionRefused):
        review_submit(lease_id=lease.pk, user=personas["reviewer2"], decision="approve")


def test_release_gives_the_item_back_at_once(queue, personas):
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    lease_release(lease_id=lease.pk, user=personas["reviewer"])
    assert queue_claim_next(queue=queue, user=personas["reviewer2"]).output_id == lease.output_id
    with pytest.raises(LeaseLost):
        review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")


def test_a_reviewer_never_gets_an_item_they_reviewed(personas):
    queue = QueueFactory(name="double", required_reviews=2)
    OutputFactory(queue=queue)
    lease = queue_claim_next(queue=queue, user=personas["reviewer"])
    review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")
    assert queue_claim_next(queue=queue, user=personas["reviewer"]) is None
    assert queue_claim_next(queue=queue, user=personas["reviewer2"]) is not None


@pytest.mark.parametrize("role", ["auditor", "approver", "deployer", "ml_engineer", "outsider"])
def test_roles_that_do_not_review_cannot_claim(queue, personas, role):
    OutputFactory(queue=queue)
    with pytest.raises(QueueForbidden):
        queue_claim_next(queue=queue, user=personas[role])


def test_reviewers_cannot_claim_from_a_lead_queue(personas):
    lead_queue = QueueFactory(name="leads-only", role=Role.LEAD)
    OutputFactory(queue=lead_queue)
    with pytest.raises(QueueForbidden):
        queue_claim_next(queue=lead_queue, user=personas["reviewer"])
    assert queue_claim_next(queue=lead_queue, user=personas["lead"]) is not None


def test_leads_can_work_reviewer_queues(queue, personas):
    OutputFactory(queue=queue)
    assert queue_claim_next(queue=queue, user=personas["lead"]) is not None


class TestGold:
    @pytest.fixture
    def gold(self, queue, personas):
        output = OutputFactory(queue=queue)
        lease = queue_claim_next(queue=queue, user=personas["reviewer"])
        review_submit(
            lease_id=lease.pk,
            user=personas["reviewer"],
            decision="reject",
            reason="wrong deductible",
        )
        return output_mark_gold(output=output, user=personas["lead"])

    def test_only_leads_mark_gold(self, queue, personas):
        from core.errors import PermissionRefused

        output = OutputFactory(queue=queue, status=Output.Status.RESOLVED, resolution="approved")
        with pytest.raises(PermissionRefused):
            output_mark_gold(output=output, user=personas["reviewer"])

    def test_unresolved_items_cannot_be_gold(self, queue, personas):
        from core.errors import ValidationFailed

        with pytest.raises(ValidationFailed):
            output_mark_gold(output=OutputFactory(queue=queue), user=personas["lead"])

    def test_gold_is_mixed_in_and_scored_without_counting_as_a_review(self, queue, personas, gold):
        Queue.objects.filter(pk=queue.pk).update(gold_rate=1.0)
        queue.refresh_from_db()
        lease = queue_claim_next(queue=queue, user=personas["reviewer2"], rng=random.Random(1))
        assert lease.is_gold and lease.output_id == gold.pk
        review = review_submit(lease_id=lease.pk, user=personas["reviewer2"], decision="approve")
        assert review.stage == "gold"
        assert review.agrees_with_gold is False
        gold.refresh_from_db()
        assert gold.reviews_done == 1  # unchanged by the gold check
        assert gold.resolution == "rejected"
        # the same gold item is not served to the same reviewer twice
        assert queue_claim_next(queue=queue, user=personas["reviewer2"]) is None
