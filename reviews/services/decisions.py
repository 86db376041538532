"""Reviewers' decisions and how an item resolves: single review, consensus, or a lead."""

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from core.audit.chain import audit_append, audit_append_many
from core.lifecycle import transition
from core.permissions import require
from reviews.diffing import word_diff
from reviews.errors import AlreadyResolved, LeaseLost, PermissionRefused, ValidationFailed
from reviews.models import GuidelineVersion, Lease, Output, Review
from reviews.roles import can_work_queue
from reviews.services.leases import check_held, held_lease_query
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
    """Record a decision on the item the caller holds a live lease on (else LeaseLost → 409).

    The hot path of the review loop, written for few round trips: one statement locks the lease
    and its output and reads the database clock and the queue's current guidelines; then the
    review is inserted, the lease ended, the output released and (when this decision settles
    it) resolved or escalated in one compare-and-set UPDATE, and the audit events appended."""
    # Locked together: the lease check and the resolution below must see the same item state.
    lease = check_held(_decision_query().filter(pk=lease_id).first(), user)
    queue = lease.queue
    if not can_work_queue(user, queue):
        raise PermissionRefused(f"You may not work the queue '{queue.name}'.")
    output = lease.output
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
    guideline = _guideline_of(lease)
    review = Review.objects.create(
        output=output,
        reviewer=user,
        lease=lease,
        queue=queue,
        guideline_version=guideline,
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
                "queue": queue.name,
                "guideline_version": guideline.version if guideline else None,
                "corrected": bool(review.corrected_output),
            },
        }
    ]
    _end_lease(lease)
    if stage != Review.Stage.GOLD:
        # The output's lease is released in the same UPDATE that resolves or escalates it.
        release = {"lease": None, "lease_expires_at": None, "reviews_done": F("reviews_done") + 1}
        output.reviews_done += 1
        if stage == Review.Stage.LEAD:
            event = _resolve(output, review, by=Output.ResolvedBy.LEAD, release=release)
        elif decision == Decision.ESCALATE:
            why = f"escalated by a reviewer: {reason.strip()[:200]}"
            event = _escalate(output, why=why, release=release)
        elif output.reviews_done >= queue.required_reviews:
            event = _settle(output, review, required=queue.required_reviews, release=release)
        else:
            event = None
            Output.objects.filter(pk=output.pk, lease_id=lease.pk).update(**release)
        output.lease = None
        output.lease_expires_at = None
        if event is not None:
            events.append(event)
    audit_append_many(actor=user, events=events)
    return review


def _decision_query():
    """held_lease_query locking the output too, with the queue's current guideline version
    (id and number) read in the same statement."""
    current = GuidelineVersion.objects.filter(queue_id=OuterRef("queue_id")).order_by("-version")
    return held_lease_query(lock_output=True).annotate(
        guideline_id=Subquery(current.values("id")[:1]),
        guideline_number=Subquery(current.values("version")[:1]),
    )


def _guideline_of(lease: Lease) -> GuidelineVersion | None:
    """The guideline version read with the lease, as a model instance whose other fields load
    on first use (what guidelines_current would have returned)."""
    if lease.guideline_id is None:  # type: ignore[attr-defined]
        return None
    return GuidelineVersion.from_db(
        connection.alias,
        ["id", "queue_id", "version"],
        [lease.guideline_id, lease.queue_id, lease.guideline_number],  # type: ignore[attr-defined]
    )


def _end_lease(lease: Lease) -> None:
    lease.ended_at = timezone.now()
    lease.end_reason = Lease.EndReason.SUBMITTED
    Lease.objects.filter(pk=lease.pk).update(ended_at=lease.ended_at, end_reason=lease.end_reason)


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


def _settle(
    output: Output, review: Review, *, required: int, release: dict[str, Any] | None = None
) -> dict[str, Any]:
    """All required reviews are in: resolve on consensus, escalate on disagreement."""
    if required == 1:
        return _resolve(output, review, by=Output.ResolvedBy.SINGLE, release=release)
    reviews = list(
        output.reviews.filter(stage=Review.Stage.REVIEW, undone_at__isnull=True).order_by(
            "created_at", "id"
        )
    )
    decisions = {r.decision for r in reviews}
    if len(decisions) > 1:
        summary = ", ".join(sorted(r.decision for r in reviews))
        return _escalate(output, why=f"reviewers disagreed ({summary})", release=release)
    if Decision.CORRECT in decisions and not all(
        _same_text(r.corrected_output, reviews[0].corrected_output) for r in reviews
    ):
        return _escalate(output, why="reviewers corrected the output differently", release=release)
    by = Output.ResolvedBy.SINGLE if len(reviews) == 1 else Output.ResolvedBy.CONSENSUS
    return _resolve(output, reviews[-1], by=by, release=release)


def _transition(
    output: Output, to: str, release: dict[str, Any] | None = None, **changes: Any
) -> None:
    """Compare-and-set on the status: the only place an output's status changes after ingest.
    `release` (lease fields) frees the caller's lease on the output in the same UPDATE, which
    then also requires the output to still point at that lease."""
    where = {"lease_id": output.lease_id} if release else None
    transition(
        output,
        to,
        refused=lambda frm, to: AlreadyResolved(f"An item cannot go from {frm} to {to}."),
        changed=lambda frm: AlreadyResolved("This item changed in the meantime."),
        where=where,
        fields={**(release or {}), **changes},
        touch=("updated_at",),
    )


def _resolve(
    output: Output, review: Review, *, by: str, release: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Resolve the output; return the audit event recording it."""
    resolution = DECISION_TO_RESOLUTION[Decision(review.decision)]
    final = review.corrected_output if resolution == Resolution.CORRECTED else output.output_text
    _transition(
        output,
        Status.RESOLVED,
        release,
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


def _escalate(output: Output, *, why: str, release: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send the output to the leads; return the audit event recording it."""
    _transition(output, Status.ESCALATED, release, escalated_at=timezone.now())
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
