"""The reviewer workbench: claiming, every decision path, skip, lost leases, leads' decisions."""

import pytest
from django.urls import reverse
from django.utils import timezone

from reviews.models import Lease, Output, Review
from reviews.services import escalation_queue, guidelines_publish, queue_claim_next, review_submit

from ..factories import OutputFactory, QueueFactory

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def queue(personas):
    queue = QueueFactory(name="low-confidence", description="Answers the model was unsure of.")
    guidelines_publish(
        queue=queue,
        user=personas["lead"],
        text="# Support answers\n\n- **Approve** when correct.\n- Check the *deductible*.",
    )
    return queue


@pytest.fixture
def items(queue):
    return [
        OutputFactory(
            queue=queue,
            input=[
                {"role": "system", "content": "You are Harbor Mutual's assistant."},
                {"role": "user", "content": f"What is my deductible? ({n})"},
            ],
            output_text=f"The deductible is $1000 for collision ({n}).",
            confidence=0.42,
            model_version="v7",
            metadata={"channel": "chat", "customer_tier": "plus"},
            tags=["policy", "deductible"],
        )
        for n in range(3)
    ]


@pytest.fixture
def reviewer_client(client, personas):
    client.force_login(personas["reviewer"])
    return client


def an_hour_ago():
    return timezone.now() - timezone.timedelta(hours=1)


def work_url(queue):
    return reverse("queue-work", args=[queue.pk])


def held_lease(user):
    return Lease.objects.filter(reviewer=user, ended_at__isnull=True).get()


def decide(client, lease, **data):
    return client.post(reverse("lease-decide", args=[lease.pk]), data, **HTMX)


def test_it_claims_the_next_item_and_shows_everything_a_reviewer_needs(
    reviewer_client, queue, items, personas
):
    response = reviewer_client.get(work_url(queue))
    assert response.status_code == 200
    lease = held_lease(personas["reviewer"])
    assert lease.output == items[0]
    html = response.content.decode()
    assert f"Item #{items[0].pk}" in html
    assert 'class="msg msg-user"' in html and "What is my deductible? (0)" in html
    assert "The deductible is $1000 for collision (0)." in html
    assert "0.42" in html and "v7" in html and "tiny-model" in html
    assert "customer_tier" in html and "plus" in html
    assert '<span class="tag">deductible</span>' in html
    # Guidelines: Markdown rendered, headings demoted below the page's own.
    assert "<strong>Approve</strong>" in html and "<h3>Support answers</h3>" in html
    assert f'data-lease="{lease.pk}"' in html and "data-countdown" in html
    assert "htmx.min.js" in html and "workbench.js" in html and "X-CSRFToken" in html


def test_it_resumes_the_held_item_on_reload_instead_of_claiming_another(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    reviewer_client.get(work_url(queue))
    assert Lease.objects.filter(reviewer=personas["reviewer"]).count() == 1


def test_plain_text_input_is_shown_as_text(reviewer_client, queue):
    OutputFactory(queue=queue, input="Plain question about towing?")
    html = reviewer_client.get(work_url(queue)).content.decode()
    assert '<div class="plain">Plain question about towing?</div>' in html
    assert 'class="chat"' not in html


def test_approve_records_the_review_and_swaps_in_the_next_item(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(reviewer_client, lease, decision="approve")
    assert response.status_code == 200
    review = Review.objects.get()
    assert (review.decision, review.output, review.reviewer) == (
        "approve",
        items[0],
        personas["reviewer"],
    )
    items[0].refresh_from_db()
    assert items[0].resolution == Output.Resolution.APPROVED
    html = response.content.decode()
    # htmx gets the panel only, with the next item in it.
    assert html.lstrip().startswith('<section id="workbench"')
    assert f"Approved item #{items[0].pk}." in html
    assert f"Item #{items[1].pk}" in html
    assert held_lease(personas["reviewer"]).output == items[1]


def test_the_editor_text_is_ignored_unless_the_decision_is_a_correction(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(
        reviewer_client, lease, decision="approve", corrected_output="something else entirely"
    )
    assert response.status_code == 200
    assert Review.objects.get().corrected_output == ""


def test_correct_stores_both_texts_and_the_server_diff(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    corrected = "The deductible is $500 for collision (0).\r\nNext step: check the app."
    response = decide(
        reviewer_client, lease, decision="correct", corrected_output=corrected, comment="fixed"
    )
    assert response.status_code == 200
    review = Review.objects.get()
    assert review.original_output == "The deductible is $1000 for collision (0)."
    # Browsers send CRLF for a textarea; the stored text keeps the output's LF.
    assert review.corrected_output == corrected.replace("\r\n", "\n")
    assert ["replace", "1000", "500"] in review.diff
    assert review.comment == "fixed"
    items[0].refresh_from_db()
    assert items[0].final_output == review.corrected_output
    assert f"Corrected item #{items[0].pk}." in response.content.decode()


def test_a_correction_equal_to_the_output_is_refused_and_the_editor_stays_open(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(
        reviewer_client, lease, decision="correct", corrected_output=items[0].output_text + "  "
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "the same as the original output" in html
    assert '<div id="editor" class="panel">' in html  # open, not hidden
    assert Review.objects.count() == 0
    assert held_lease(personas["reviewer"]) == lease  # still theirs, same item


def test_reject_without_a_reason_asks_for_one_and_keeps_the_item(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(reviewer_client, lease, decision="reject", reason="  ")
    assert response.status_code == 400
    html = response.content.decode()
    assert "reason: required to reject" in html
    assert '<div id="reason-panel" class="panel">' in html
    assert 'aria-invalid="true"' in html
    assert f"Item #{items[0].pk}" in html
    assert Review.objects.count() == 0


def test_reject_with_a_reason(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(reviewer_client, lease, decision="reject", reason="Wrong figure.")
    assert response.status_code == 200
    review = Review.objects.get()
    assert (review.decision, review.reason) == ("reject", "Wrong figure.")
    items[0].refresh_from_db()
    assert items[0].resolution == Output.Resolution.REJECTED


def test_escalate_sends_the_item_to_the_leads(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(reviewer_client, lease, decision="escalate", reason="Unsure of the policy.")
    assert response.status_code == 200
    items[0].refresh_from_db()
    assert items[0].status == Output.Status.ESCALATED


def test_an_unknown_decision_is_refused(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = decide(reviewer_client, lease, decision="delete")
    assert response.status_code == 400
    assert Review.objects.count() == 0


def test_skip_releases_the_item_and_shows_another(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = reviewer_client.post(reverse("lease-skip", args=[lease.pk]), **HTMX)
    assert response.status_code == 200
    lease.refresh_from_db()
    assert lease.end_reason == Lease.EndReason.RELEASED
    items[0].refresh_from_db()
    assert items[0].lease_id is None  # back in the queue for anyone
    assert held_lease(personas["reviewer"]).output == items[1]
    assert f"Skipped item #{items[0].pk}" in response.content.decode()


def test_a_lost_lease_says_so_hands_back_the_text_and_moves_on(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    # The lease runs out and another reviewer takes the item. (An hour back: on PostgreSQL the
    # claim compares with now(), the start of the test's transaction.)
    Lease.objects.filter(pk=lease.pk).update(expires_at=an_hour_ago())
    Output.objects.filter(pk=lease.output_id).update(lease_expires_at=an_hour_ago())
    taken = queue_claim_next(queue=queue, user=personas["reviewer2"])
    assert taken.output_id == items[0].pk
    response = decide(
        reviewer_client,
        lease,
        decision="correct",
        corrected_output="My careful <correction> of the answer.",
    )
    assert response.status_code == 409
    html = response.content.decode()
    assert f"Your decision on item #{items[0].pk} was not recorded" in html
    assert "My careful &lt;correction&gt; of the answer." in html  # kept, escaped, copyable
    assert 'data-copy="kept-correction"' in html
    assert f"Item #{items[1].pk}" in html
    assert Review.objects.count() == 0


def test_an_item_resolved_by_someone_else_says_so_and_moves_on(
    reviewer_client, queue, items, personas
):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    Output.objects.filter(pk=lease.output_id).update(status=Output.Status.RESOLVED)
    response = decide(reviewer_client, lease, decision="reject", reason="Off topic.")
    assert response.status_code == 409
    html = response.content.decode()
    assert "resolved in the meantime" in html
    assert "Off topic." in html and 'data-copy="kept-reason"' in html
    assert f"Item #{items[1].pk}" in html


def test_an_empty_queue_says_so_and_offers_the_other_queues(reviewer_client, queue, personas):
    other = QueueFactory(name="audit-sample")
    OutputFactory(queue=other)
    QueueFactory(name="leads-only", role="lead")
    response = reviewer_client.get(work_url(queue))
    html = response.content.decode()
    assert "Nothing left for you in low-confidence" in html
    assert reverse("queue-work", args=[other.pk]) in html and "1 pending" in html
    assert "leads-only" not in html
    assert Lease.objects.count() == 0


def test_the_last_item_moves_on_to_the_empty_message(reviewer_client, queue, personas):
    OutputFactory(queue=queue)
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    html = decide(reviewer_client, lease, decision="approve").content.decode()
    assert "Nothing left for you in low-confidence" in html


def test_a_plain_post_gets_the_whole_page(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    response = reviewer_client.post(
        reverse("lease-decide", args=[lease.pk]), {"decision": "approve"}
    )
    assert response.status_code == 200
    assert b"<!doctype html>" in response.content


def test_renew_extends_the_lease(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    Lease.objects.filter(pk=lease.pk).update(
        expires_at=timezone.now() + timezone.timedelta(seconds=20)
    )
    response = reviewer_client.post(reverse("lease-renew", args=[lease.pk]))
    assert response.status_code == 200
    assert 290 <= response.json()["seconds_left"] <= 300
    lease.refresh_from_db()
    assert lease.renewals == 1


def test_renewing_a_lost_lease_answers_409(reviewer_client, queue, items, personas):
    reviewer_client.get(work_url(queue))
    lease = held_lease(personas["reviewer"])
    Lease.objects.filter(pk=lease.pk).update(expires_at=an_hour_ago())
    response = reviewer_client.post(reverse("lease-renew", args=[lease.pk]))
    assert response.status_code == 409
    assert response.json()["code"] == "lease_lost"


def test_guidelines_and_outputs_cannot_inject_markup(reviewer_client, queue, personas):
    guidelines_publish(
        queue=queue,
        user=personas["lead"],
        text='Hi <script>alert(1)</script> [x](javascript:alert(2)) <img src="http://evil/x">'
        ' <a href="https://example.com" onclick="steal()">ok</a>',
    )
    OutputFactory(
        queue=queue,
        output_text="<script>alert(3)</script>",
        metadata={"<b>k</b>": "<i>v</i>"},
        tags=["<svg onload=x>"],
    )
    html = reviewer_client.get(work_url(queue)).content.decode()
    assert "<script>alert" not in html
    assert "javascript:" not in html and "onclick" not in html and "evil" not in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert "<svg" not in html and "<b>k</b>" not in html
    assert 'href="https://example.com"' in html


def test_a_second_reviewer_does_not_see_the_first_review(client, personas):
    double = QueueFactory(name="policy-review", required_reviews=2)
    OutputFactory(queue=double)
    lease = queue_claim_next(queue=double, user=personas["reviewer"])
    review_submit(
        lease_id=lease.pk,
        user=personas["reviewer"],
        decision="correct",
        corrected_output="Secret wording of the first reviewer.",
        comment="first reviewer's note",
    )
    client.force_login(personas["reviewer2"])
    html = client.get(work_url(double)).content.decode()
    assert f"Item #{lease.output_id}" in html
    assert "Secret wording" not in html and "first reviewer's note" not in html
    assert "Earlier reviews" not in html and ">reviewer<" not in html


@pytest.fixture
def escalated(personas):
    """An item two reviewers disagreed on, now in the leads' escalations queue."""
    double = QueueFactory(name="policy-review", required_reviews=2)
    output = OutputFactory(queue=double, output_text="Claims are paid within 24 hours.")
    for who, kwargs in (
        ("reviewer", {"decision": "approve"}),
        (
            "reviewer2",
            {"decision": "correct", "corrected_output": "Claims are paid within 5 to 10 days."},
        ),
    ):
        lease = queue_claim_next(queue=double, user=personas[who])
        review_submit(lease_id=lease.pk, user=personas[who], **kwargs)
    output.refresh_from_db()
    assert output.status == Output.Status.ESCALATED
    return output


def test_a_lead_sees_the_earlier_reviews_side_by_side_and_decides(client, personas, escalated):
    client.force_login(personas["lead"])
    escalations = escalation_queue()
    html = client.get(work_url(escalations)).content.decode()
    assert f"Item #{escalated.pk}" in html
    assert "Earlier reviews (2)" in html
    assert "reviewer: Approve" in html and "reviewer2: Correct" in html
    assert "<del>24 hours</del>" in html or "<del>24</del>" in html
    assert 'data-key="x"' not in html  # a lead's decision is final: no escalating further
    lease = held_lease(personas["lead"])
    response = decide(
        client, lease, decision="correct", corrected_output="Claims are paid within 5-10 days."
    )
    assert response.status_code == 200
    escalated.refresh_from_db()
    assert escalated.status == Output.Status.RESOLVED
    assert escalated.resolved_by == Output.ResolvedBy.LEAD
    assert escalated.final_output == "Claims are paid within 5-10 days."
    assert Review.objects.get(stage=Review.Stage.LEAD).reviewer == personas["lead"]


def test_a_lead_cannot_escalate_an_escalation(client, personas, escalated):
    client.force_login(personas["lead"])
    client.get(work_url(escalation_queue()))
    lease = held_lease(personas["lead"])
    response = decide(client, lease, decision="escalate", reason="not sure")
    assert response.status_code == 400
    assert "a lead&#x27;s decision is final" in response.content.decode()


def test_a_lead_deciding_an_escalation_sees_the_original_queues_guidelines(
    client, personas, escalated
):
    guidelines_publish(
        queue=escalated.queue,
        user=personas["lead"],
        text="# Payment times\n\n- Claims are paid within **5 to 10 days**.",
    )
    client.force_login(personas["lead"])
    html = client.get(work_url(escalation_queue())).content.decode()
    assert f"Item #{escalated.pk}" in html
    assert "This queue has no guidelines yet." not in html
    assert "Guidelines of policy-review" in html
    assert "the queue this item was escalated from" in html
    assert "<strong>5 to 10 days</strong>" in html
    # The reviewers decided before these guidelines were published: the lead is told so.
    assert "Reviewers worked without guidelines" in html
    assert "The escalations queue has no guidelines of its own." in html


def test_the_escalation_queues_own_guidelines_come_after_the_original_ones(
    client, personas, escalated
):
    guidelines_publish(queue=escalated.queue, user=personas["lead"], text="Original rules.")
    guidelines_publish(queue=escalation_queue(), user=personas["lead"], text="Lead rules.")
    client.force_login(personas["lead"])
    html = client.get(work_url(escalation_queue())).content.decode()
    assert html.index("Original rules.") < html.index("Lead rules.")
    assert "Guidelines of the escalations queue" in html
