"""Reviewers' decisions and how an item resolves: single review, consensus, or a lead."""

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.audit.chain import audit_append, audit_append_many
from core.lifecycle import transition
from core.permissions import require
from reviews.diffing import word_diff
from reviews.errors import AlreadyResolved, LeaseLost, PermissionRefused, ValidationFailed
from reviews.models import Lease, Output, Review
from reviews.roles import can_work_queue
from reviews.selectors import guidelines_current
from reviews.services.leases import _held_lease, lease_end
from reviews.services.text import unstorable

Decision = Review.Decision
Status = Output.Status
Resolution = Output.Resolution

DECISION_TO_RESOLUTION = {
    Decision.APPROVE: Resolution.APPROVED,
    Decision.CORRECT: Resolution.CORRECTED,
    Decision.REJECT: Resolution.REJECTED,
}
RESOLUTION_TO_DECISION = {v: k for k, v in DECISION_TO_RESOLUTION.items()}
MAX_REASON_CHARS = 5000


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _validate(
    *,
    decision: str,
    original: str,
    corrected: str,
    reason: str,
    comment: str,
    stage: str,
    max_text: int,
) -> None:
    if decision not in Decision.values:
        raise ValidationFailed(
            f"decision: must be one of {', '.join(Decision.values)}", field="decision"
        )
    if decision == Decision.CORRECT:
        if not corrected.strip():
            raise ValidationFailed(
                "corrected_output: a correction needs the corrected text", field="corrected_output"
            )
        if _same_text(corrected, original):
            raise ValidationFailed(
                "corrected_output: the correction is the same as the original output; approve it",
                field="corrected_output",
            )
        if len(corrected) > max_text:
            raise ValidationFailed(
                f"corrected_output: longer than {max_text} characters", field="corrected_output"
            )
    elif corrected.strip():
        raise ValidationFailed(
            "corrected_output: only a correction carries corrected text", field="corrected_output"
        )
    if decision in (Decision.REJECT, Decision.ESCALATE) and not reason.strip():
        raise ValidationFailed(f"reason: required to {decision}", field="reason")
    if len(reason) > MAX_REASON_CHARS:
        raise ValidationFailed(f"reason: longer than {MAX_REASON_CHARS} characters", field="reason")
    if decision == Decision.ESCALATE and stage == Review.Stage.LEAD:
        raise ValidationFailed(
            "decision: a lead's decision is final; approve, correct or reject", field="decision"
        )
    for name, text in (("corrected_output", corrected), ("reason", reason), ("comment", comment)):
        if problem := unstorable(text):
            raise ValidationFailed(f"{name}: {problem}", field=name)


@transaction.atomic
def review_submit(
    *,
    lease_id: uuid.UUID | str,
    user: AbstractBaseUser,
    decision: str,
    corrected_output: str = "",
    reason: str = "",
    comment: str = "",
) -> Review:
    """Record a decision on the item the caller holds a live lease on (else LeaseLost → 409)."""
    lease = _held_lease(lease_id, user, check_output=False)
    if not can_work_queue(user, lease.queue):
        raise PermissionRefused(f"You may not work the queue '{lease.queue.name}'.")
    # Locked: the lease check above and the resolution below must see the same item state.
    output = Output.objects.select_for_update(no_key=True).get(pk=lease.output_id)
    if not lease.is_gold and output.lease_id != lease.pk:
        raise LeaseLost("Another reviewer has this item now.")
    stage = _stage_for(lease, output)
    _validate(
        decision=decision,
        original=output.output_text,
        corrected=corrected_output,
        reason=reason,
        comment=comment,
        stage=stage,
        max_text=settings.SIGNOFF["MAX_TEXT_CHARS"],
    )
    review = Review.objects.create(
        output=output,
        reviewer=user,
        lease=lease,
        queue=lease.queue,
        guideline_version=guidelines_current(queue=lease.queue),
        stage=stage,
        decision=decision,
        original_output=output.output_text,
        corrected_output=corrected_output if decision == Decision.CORRECT else "",
        diff=word_diff(output.output_text, corrected_output)
        if decision == Decision.CORRECT
        else [],
        reason=reason,
        comment=comment,
        agrees_with_gold=_agrees_with_gold(output, decision)
        if stage == Review.Stage.GOLD
        else None,
    )
    events: list[dict[str, Any]] = [
        {
            "action": "review.submitted",
            "object_type": "output",
            "object_id": output.pk,
            "payload": {
                "review": review.pk,
                "stage": stage,
                "decision": decision,
                "queue": lease.queue.name,
                "guideline_version": review.guideline_version.version
                if review.guideline_version
                else None,
                "corrected": bool(review.corrected_output),
            },
        }
    ]
    if stage == Review.Stage.GOLD:
        lease_end(lease, Lease.EndReason.SUBMITTED)
    else:
        lease_end(lease, Lease.EndReason.SUBMITTED, reviews_done=F("reviews_done") + 1)
        output.reviews_done += 1
        if stage == Review.Stage.LEAD:
            events.append(_resolve(output, review, by=Output.ResolvedBy.LEAD))
        elif decision == Decision.ESCALATE:
            events.append(_escalate(output, why=f"escalated by a reviewer: {reason.strip()[:200]}"))
        elif output.reviews_done >= lease.queue.required_reviews:
            events.append(_settle(output, review, required=lease.queue.required_reviews))
    audit_append_many(actor=user, events=events)
    return review


def _stage_for(lease: Lease, output: Output) -> str:
    if lease.is_gold:
        return Review.Stage.GOLD
    if output.status == Status.ESCALATED:
        return Review.Stage.LEAD
    if output.status != Status.PENDING:
        raise AlreadyResolved("This item was resolved in the meantime.")
    return Review.Stage.REVIEW


def _agrees_with_gold(output: Output, decision: str) -> bool:
    # Wording differs between people: a correction of an item whose key is a correction agrees,
    # whatever its words; the texts stay side by side on the review for leads to read.
    return decision == RESOLUTION_TO_DECISION.get(output.resolution)


def _settle(output: Output, review: Review, *, required: int) -> dict[str, Any]:
    """All required reviews are in: resolve on consensus, escalate on disagreement."""
    if required == 1:
        return _resolve(output, review, by=Output.ResolvedBy.SINGLE)
    reviews = list(
        output.reviews.filter(stage=Review.Stage.REVIEW, undone_at__isnull=True).order_by(
            "created_at", "id"
        )
    )
    decisions = {r.decision for r in reviews}
    if len(decisions) > 1:
        summary = ", ".join(sorted(r.decision for r in reviews))
        return _escalate(output, why=f"reviewers disagreed ({summary})")
    if Decision.CORRECT in decisions and not all(
        _same_text(r.corrected_output, reviews[0].corrected_output) for r in reviews
    ):
        return _escalate(output, why="reviewers corrected the output differently")
    by = Output.ResolvedBy.SINGLE if len(reviews) == 1 else Output.ResolvedBy.CONSENSUS
    return _resolve(output, reviews[-1], by=by)


def _transition(output: Output, to: str, **changes: Any) -> None:
    """Compare-and-set on the status: the only place an output's status changes after ingest."""
    transition(
        output,
        to,
        refused=lambda frm, to: AlreadyResolved(f"An item cannot go from {frm} to {to}."),
        changed=lambda frm: AlreadyResolved("This item changed in the meantime."),
        fields=changes,
        touch=("updated_at",),
    )


def _resolve(output: Output, review: Review, *, by: str) -> dict[str, Any]:
    """Resolve the output; return the audit event recording it."""
    resolution = DECISION_TO_RESOLUTION[Decision(review.decision)]
    final = review.corrected_output if resolution == Resolution.CORRECTED else output.output_text
    _transition(
        output,
        Status.RESOLVED,
        resolution=resolution,
        resolved_by=by,
        final_output=final,
        resolved_at=timezone.now(),
    )
    return {
        "action": "output.resolved",
        "object_type": "output",
        "object_id": output.pk,
        "payload": {"resolution": resolution, "resolved_by": by, "reviews": output.reviews_done},
    }


def _escalate(output: Output, *, why: str) -> dict[str, Any]:
    """Send the output to the leads; return the audit event recording it."""
    _transition(output, Status.ESCALATED, escalated_at=timezone.now())
    return {
        "action": "output.escalated",
        "object_type": "output",
        "object_id": output.pk,
        "payload": {"why": why},
    }


@transaction.atomic
def output_mark_gold(*, output: Output, user: AbstractBaseUser, is_gold: bool = True) -> Output:
    """A lead marks a human-resolved item as gold: its answer becomes the key for checks."""
    require(user, "outputs.mark_gold", PermissionRefused("Only leads mark gold items."))
    output = Output.objects.select_for_update(no_key=True).get(pk=output.pk)
    if is_gold and (
        output.status != Status.RESOLVED or output.resolved_by == Output.ResolvedBy.ROUTING
    ):
        raise ValidationFailed("Only items resolved by people can be gold.", field="output")
    Output.objects.filter(pk=output.pk).update(is_gold=is_gold)
    output.is_gold = is_gold
    audit_append(
        actor=user,
        action="output.gold_marked" if is_gold else "output.gold_unmarked",
        object_type="output",
        object_id=output.pk,
        payload={"queue": output.queue.name if output.queue else None},
    )
    return output
