import pytest
from django.utils import timezone

from core.errors import Conflict, PermissionRefused
from core.models import AuditEvent
from reviews.models import Output, OutputLock
from reviews.services import escalation_queue, queue_claim_next, review_submit, review_undo

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db


def decide(queue, user, decision, **kwargs):
    lease = queue_claim_next(queue=queue, user=user)
    return review_submit(lease_id=lease.pk, user=user, decision=decision, **kwargs)


@pytest.fixture
def queue(personas):
    return QueueFactory(name="undo")


def test_undo_reopens_a_resolved_item_and_leases_it_back(queue, personas):
    output = OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "reject", reason="wrong")
    lease = review_undo(review_id=review.pk, user=personas["reviewer"])
    output.refresh_from_db()
    review.refresh_from_db()
    assert review.undone_at is not None
    assert output.status == Output.Status.PENDING and output.resolution == ""
    assert output.reviews_done == 0 and output.lease_id == lease.pk
    again = review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")
    output.refresh_from_db()
    assert again.decision == "approve" and output.resolution == "approved"
    assert "review.undone" in AuditEvent.objects.values_list("action", flat=True)


def test_only_the_last_decision_can_be_undone(queue, personas):
    OutputFactory.create_batch(2, queue=queue)
    first = decide(queue, personas["reviewer"], "approve")
    decide(queue, personas["reviewer"], "approve")
    with pytest.raises(Conflict, match="most recent"):
        review_undo(review_id=first.pk, user=personas["reviewer"])


def test_someone_elses_decision_cannot_be_undone(queue, personas):
    OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "approve")
    with pytest.raises(PermissionRefused):
        review_undo(review_id=review.pk, user=personas["reviewer2"])


def test_an_item_used_in_a_dataset_cannot_be_undone(queue, personas):
    output = OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "approve")
    OutputLock.objects.create(output=output, locked_at=timezone.now())
    with pytest.raises(Conflict, match="dataset"):
        review_undo(review_id=review.pk, user=personas["reviewer"])
    output.refresh_from_db()
    assert output.status == Output.Status.RESOLVED


def test_undo_of_an_escalation_returns_it_to_the_queue(queue, personas):
    output = OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "escalate", reason="unsure")
    review_undo(review_id=review.pk, user=personas["reviewer"])
    output.refresh_from_db()
    assert output.status == Output.Status.PENDING and output.escalated_at is None


def test_a_reviewer_cannot_undo_after_a_lead_decided(queue, personas):
    output = OutputFactory(queue=queue)
    review = decide(queue, personas["reviewer"], "escalate", reason="unsure")
    decide(escalation_queue(), personas["lead"], "approve")
    with pytest.raises(Conflict):
        review_undo(review_id=review.pk, user=personas["reviewer"])
    output.refresh_from_db()
    assert output.resolved_by == "lead"


def test_a_lead_undo_returns_the_item_to_the_escalations(queue, personas):
    output = OutputFactory(queue=queue)
    decide(queue, personas["reviewer"], "escalate", reason="unsure")
    lead_review = decide(escalation_queue(), personas["lead"], "approve")
    review_undo(review_id=lead_review.pk, user=personas["lead"])
    output.refresh_from_db()
    assert output.status == Output.Status.ESCALATED


def test_undone_reviews_do_not_count_towards_consensus(personas):
    double = QueueFactory(name="double-undo", required_reviews=2)
    output = OutputFactory(queue=double)
    first = decide(double, personas["reviewer"], "reject", reason="bad")
    lease = review_undo(review_id=first.pk, user=personas["reviewer"])
    review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")
    decide(double, personas["reviewer2"], "approve")
    output.refresh_from_db()
    assert output.status == Output.Status.RESOLVED
    assert output.resolved_by == Output.ResolvedBy.CONSENSUS
