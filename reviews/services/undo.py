"""Taking back one's last decision, while nothing downstream depends on it yet."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.audit.chain import audit_append
from reviews.errors import AlreadyResolved, Conflict, NotFound, PermissionRefused
from reviews.models import Lease, Output, OutputLock, Review
from reviews.services.decisions import _transition
from reviews.services.leases import db_now

Status = Output.Status
CLEARED_RESOLUTION = {"resolution": "", "resolved_by": "", "final_output": "", "resolved_at": None}


@transaction.atomic
def review_undo(*, review_id: int, user: AbstractBaseUser) -> Lease:
    """Undo the caller's most recent decision and lease the item back to them to decide again.

    Refused once the item is used by a dataset version (an `OutputLock`), once a lead decided it
    after this review, or while someone else holds it. The review row stays, marked undone,
    and the audit chain records the undo."""
    review = Review.objects.select_for_update(no_key=True).filter(pk=review_id).first()
    if review is None:
        raise NotFound("No such review.")
    if review.reviewer_id != user.pk:
        raise PermissionRefused("Only the reviewer who made a decision can undo it.")
    if review.undone_at is not None:
        raise Conflict("This decision was already undone.")
    latest = (
        Review.objects.filter(reviewer_id=user.pk, undone_at__isnull=True)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    if latest != review.pk:
        raise Conflict("Only your most recent decision can be undone.")
    output = Output.objects.select_for_update(no_key=True).get(pk=review.output_id)
    if OutputLock.objects.filter(output_id=output.pk).exists():
        raise Conflict("This item is already used in a dataset version; it cannot be undone.")
    now = db_now()
    if output.lease_id and output.lease_expires_at and output.lease_expires_at > now:
        raise Conflict("Someone else is reviewing this item now.")

    if review.stage == Review.Stage.REVIEW:
        later_lead = output.reviews.filter(stage=Review.Stage.LEAD, undone_at__isnull=True).exists()
        if later_lead:
            raise AlreadyResolved("A lead has decided this item since; it cannot be undone.")
        if output.status != Status.PENDING:
            _transition(output, Status.PENDING, escalated_at=None, **CLEARED_RESOLUTION)
    elif review.stage == Review.Stage.LEAD:
        _transition(output, Status.ESCALATED, **CLEARED_RESOLUTION)

    Review.objects.filter(pk=review.pk).update(undone_at=timezone.now())
    if review.stage != Review.Stage.GOLD:
        Output.objects.filter(pk=output.pk).update(reviews_done=F("reviews_done") - 1)

    queue = review.queue
    lease = Lease.objects.create(
        output=output,
        queue=queue,
        reviewer=user,
        is_gold=review.stage == Review.Stage.GOLD,
        claimed_at=now,
        expires_at=now + timedelta(seconds=queue.lease_seconds),
    )
    if not lease.is_gold:
        Output.objects.filter(pk=output.pk).update(lease=lease, lease_expires_at=lease.expires_at)
    audit_append(
        actor=user,
        action="review.undone",
        object_type="output",
        object_id=output.pk,
        payload={"review": review.pk, "decision": review.decision, "stage": review.stage},
    )
    return lease
