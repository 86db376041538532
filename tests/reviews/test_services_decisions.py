import pytest

from core.errors import ValidationFailed
from core.models import AuditEvent
from reviews.errors import AlreadyResolved
from reviews.models import Output, Review
from reviews.selectors import cohens_kappa, queue_agreement
from reviews.services import escalation_queue, guidelines_publish, queue_claim_next, review_submit

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db


def decide(queue, user, decision, **kwargs):
    lease = queue_claim_next(queue=queue, user=user)
    assert lease is not None, "nothing to claim"
    return review_submit(lease_id=lease.pk, user=user, decision=decision, **kwargs)


@pytest.fixture
def single(personas):
    return QueueFactory(name="single")


@pytest.fixture
def double(personas):
    return QueueFactory(name="double", required_reviews=2)


def test_approve_resolves_a_single_review_item(single, personas):
    output = OutputFactory(queue=single)
    review = decide(single, personas["reviewer"], "approve")
    output.refresh_from_db()
    assert output.status == Output.Status.RESOLVED
    assert output.resolution == Output.Resolution.APPROVED
    assert output.resolved_by == Output.ResolvedBy.SINGLE
    assert output.final_output == output.output_text
    assert review.lease.end_reason == "submitted"
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions == ["review.submitted", "output.resolved"]


def test_correct_keeps_original_correction_and_word_diff(single, personas):
    output = OutputFactory(queue=single, output_text="The deductible is $1000 for collision.")
    review = decide(
        single,
        personas["reviewer"],
        "correct",
        corrected_output="The deductible is $500 for collision.",
    )
    output.refresh_from_db()
    assert output.resolution == Output.Resolution.CORRECTED
    assert output.final_output == "The deductible is $500 for collision."
    assert review.original_output == "The deductible is $1000 for collision."
    assert ["replace", "1000", "500"] in review.diff
    assert "".join(chunk[1] for chunk in review.diff) == review.original_output
    assert "".join(chunk[2] for chunk in review.diff) == review.corrected_output


@pytest.mark.parametrize(
    ("decision", "kwargs", "field"),
    [
        ("correct", {}, "corrected_output"),
        ("correct", {"corrected_output": "The deductible is  $500."}, "corrected_output"),
        ("reject", {}, "reason"),
        ("escalate", {"reason": "   "}, "reason"),
        ("approve", {"corrected_output": "sneaky edit"}, "corrected_output"),
        ("delete", {}, "decision"),
    ],
)
def test_bad_decisions_are_refused_and_leave_the_lease(single, personas, decision, kwargs, field):
    output = OutputFactory(queue=single)
    lease = queue_claim_next(queue=single, user=personas["reviewer"])
    with pytest.raises(ValidationFailed) as error:
        review_submit(lease_id=lease.pk, user=personas["reviewer"], decision=decision, **kwargs)
    assert error.value.field == field
    output.refresh_from_db()
    assert output.status == Output.Status.PENDING and output.lease_id == lease.pk
    assert Review.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_reject_needs_and_keeps_a_reason(single, personas):
    output = OutputFactory(queue=single)
    review = decide(single, personas["reviewer"], "reject", reason="Invents a 24h deadline")
    output.refresh_from_db()
    assert output.resolution == Output.Resolution.REJECTED
    assert review.reason == "Invents a 24h deadline"


def test_a_review_records_the_guideline_version(single, personas):
    guidelines_publish(queue=single, user=personas["lead"], text="v1")
    guidelines_publish(queue=single, user=personas["lead"], text="v2")
    OutputFactory(queue=single)
    review = decide(single, personas["reviewer"], "approve")
    assert review.guideline_version.version == 2


def test_escalate_moves_the_item_to_the_leads(single, personas):
    output = OutputFactory(queue=single)
    decide(single, personas["reviewer"], "escalate", reason="not sure about flood cover")
    output.refresh_from_db()
    assert output.status == Output.Status.ESCALATED
    leads = escalation_queue()
    review = decide(leads, personas["lead"], "correct", corrected_output="Flood is not covered.")
    output.refresh_from_db()
    assert review.stage == Review.Stage.LEAD
    assert output.status == Output.Status.RESOLVED
    assert output.resolved_by == Output.ResolvedBy.LEAD
    assert output.final_output == "Flood is not covered."


def test_a_lead_cannot_escalate_further(single, personas):
    OutputFactory(queue=single)
    decide(single, personas["reviewer"], "escalate", reason="unsure")
    lease = queue_claim_next(queue=escalation_queue(), user=personas["lead"])
    with pytest.raises(ValidationFailed, match="final"):
        review_submit(lease_id=lease.pk, user=personas["lead"], decision="escalate", reason="x")


def test_reviewers_cannot_claim_escalations(single, personas):
    from reviews.errors import QueueForbidden

    with pytest.raises(QueueForbidden):
        queue_claim_next(queue=escalation_queue(), user=personas["reviewer"])


def test_consensus_resolves_when_all_reviewers_agree(double, personas):
    output = OutputFactory(queue=double)
    decide(double, personas["reviewer"], "approve")
    output.refresh_from_db()
    assert output.status == Output.Status.PENDING and output.reviews_done == 1
    decide(double, personas["reviewer2"], "approve")
    output.refresh_from_db()
    assert output.status == Output.Status.RESOLVED
    assert output.resolved_by == Output.ResolvedBy.CONSENSUS


def test_disagreement_escalates_and_the_lead_decides(double, personas):
    output = OutputFactory(queue=double)
    decide(double, personas["reviewer"], "approve")
    decide(double, personas["reviewer2"], "reject", reason="wrong amount")
    output.refresh_from_db()
    assert output.status == Output.Status.ESCALATED
    escalated = AuditEvent.objects.get(action="output.escalated")
    assert "disagreed" in escalated.payload["why"]
    decide(escalation_queue(), personas["lead"], "reject", reason="agree with reviewer2")
    output.refresh_from_db()
    assert output.resolution == Output.Resolution.REJECTED
    assert output.resolved_by == Output.ResolvedBy.LEAD


def test_different_corrections_escalate_identical_ones_resolve(double, personas):
    differing = OutputFactory(queue=double)
    decide(double, personas["reviewer"], "correct", corrected_output="Answer A.")
    decide(double, personas["reviewer2"], "correct", corrected_output="Answer B.")
    differing.refresh_from_db()
    assert differing.status == Output.Status.ESCALATED
    same = OutputFactory(queue=double)
    decide(double, personas["reviewer"], "correct", corrected_output="Answer  A.")
    decide(double, personas["reviewer2"], "correct", corrected_output="Answer A.")
    same.refresh_from_db()
    assert same.resolution == Output.Resolution.CORRECTED


def test_a_resolved_item_cannot_be_decided_again(single, personas):
    output = OutputFactory(queue=single)
    lease = queue_claim_next(queue=single, user=personas["reviewer"])
    Output.objects.filter(pk=output.pk).update(status=Output.Status.RESOLVED)
    with pytest.raises(AlreadyResolved):
        review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")


def test_auditors_cannot_decide_even_with_a_lease_id(single, personas):
    from core.errors import PermissionRefused

    OutputFactory(queue=single)
    lease = queue_claim_next(queue=single, user=personas["reviewer"])
    with pytest.raises(PermissionRefused):
        review_submit(lease_id=lease.pk, user=personas["auditor"], decision="approve")


class TestAgreement:
    def test_kappa_on_known_figures(self):
        # Classic worked example: 50 items, 20 yes/yes, 15 no/no, 5 yes/no, 10 no/yes.
        pairs = [("y", "y")] * 20 + [("n", "n")] * 15 + [("y", "n")] * 5 + [("n", "y")] * 10
        observed, kappa = cohens_kappa(pairs)
        assert observed == pytest.approx(0.7)
        assert kappa == pytest.approx(0.4)

    def test_perfect_and_empty(self):
        assert cohens_kappa([("a", "a"), ("b", "b")]) == (1.0, 1.0)
        assert cohens_kappa([]) == (None, None)

    def test_queue_agreement_uses_the_first_two_reviews(self, double, personas):
        for first, second in [
            ("approve", "approve"),
            ("approve", "reject"),
            ("reject", "reject"),
            ("approve", "approve"),
        ]:
            OutputFactory(queue=double)
            decide(double, personas["reviewer"], first, reason="r")
            decide(double, personas["reviewer2"], second, reason="r")
        agreement = queue_agreement(queue=double)
        assert agreement.items == 4
        assert agreement.percent_agreement == pytest.approx(0.75)
        assert agreement.cohens_kappa == pytest.approx(0.5)
