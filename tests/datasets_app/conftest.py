"""Fixtures for the datasets app: resolved outputs made directly (the review loop has its own
tests), with the live reviews a real resolution leaves behind."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from reviews.models import Output, OutputTag, Review
from tests.factories import OutputFactory, QueueFactory

_counter = itertools.count()
DECISION = {"approved": "approve", "corrected": "correct", "rejected": "reject"}


@pytest.fixture
def resolved(make_user):
    """resolved(input, answer, resolution="approved", correction=None, by="single", ...)."""
    reviewers = [make_user("reviewer", username=f"dsrev{i}") for i in range(3)]
    lead = make_user("lead", username="dslead")
    base = timezone.now() - timedelta(days=1)

    def make(
        input,
        answer="The answer.",
        *,
        resolution="approved",
        correction=None,
        by="single",
        queue="support",
        tags=(),
        source="tests",
        model_name="tiny-model",
        status=Output.Status.RESOLVED,
    ):
        n = next(_counter)
        q = QueueFactory(name=queue)
        if status == Output.Status.AUTO_ACCEPTED:
            by = Output.ResolvedBy.ROUTING
        final = correction if resolution == "corrected" else answer
        output = OutputFactory(
            input=input,
            output_text=answer,
            queue=q,
            source=source,
            model_name=model_name,
            tags=list(tags),
            status=status,
            resolution=resolution,
            resolved_by=by,
            final_output=final if resolution != "rejected" else "",
            resolved_at=base + timedelta(seconds=n),
        )
        for tag in tags:
            OutputTag.objects.create(output=output, name=tag)
        if status == Output.Status.RESOLVED:
            people = {"single": reviewers[:1], "consensus": reviewers[:2], "lead": reviewers[:2]}[
                by
            ]
            for index, person in enumerate(people):
                decision = DECISION[resolution]
                if by == "lead" and index == 1:
                    decision = "reject" if decision != "reject" else "approve"
                Review.objects.create(
                    output=output,
                    reviewer=person,
                    queue=q,
                    decision=decision,
                    original_output=answer,
                    corrected_output=correction if decision == "correct" else "",
                )
            if by == "lead":
                Review.objects.create(
                    output=output,
                    reviewer=lead,
                    queue=q,
                    stage=Review.Stage.LEAD,
                    decision=DECISION[resolution],
                    original_output=answer,
                    corrected_output=correction or "",
                )
        return output

    return make


@pytest.fixture
def engineer(personas):
    return personas["ml_engineer"]
