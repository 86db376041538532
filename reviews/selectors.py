"""Reads worth naming: what a user may see, queue figures, agreement statistics."""

from collections import Counter
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from core.permissions import can
from core.roles import user_roles
from reviews.models import Output, Queue, Review
from reviews.roles import can_work_queue


def queues_for(*, user: AbstractBaseUser) -> list[Queue]:
    """Queues this user may see: all of them for overseers, the ones they work otherwise."""
    queues = list(Queue.objects.filter(is_active=True).order_by("kind", "name"))
    if can(user, "outputs.read"):
        return queues
    return [queue for queue in queues if can_work_queue(user, queue)]


def queue_counts(*, queues: list[Queue], user: AbstractBaseUser | None = None) -> dict[int, dict]:
    """Pending, in review (live lease), done, and the user's own reviews today, per queue."""
    now = timezone.now()
    ids = [q.pk for q in queues if q.kind == Queue.Kind.REVIEW]
    rows = (
        Output.objects.filter(queue_id__in=ids)
        .values("queue_id")
        .annotate(
            pending=Count(
                "id",
                filter=Q(status="pending")
                & (Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)),
            ),
            in_review=Count("id", filter=Q(status="pending", lease_expires_at__gte=now)),
            escalated=Count("id", filter=Q(status="escalated")),
            done=Count("id", filter=Q(status="resolved")),
        )
    )
    counts = {
        q.pk: {"pending": 0, "in_review": 0, "escalated": 0, "done": 0, "mine_today": 0}
        for q in queues
    }
    for row in rows:
        counts[row.pop("queue_id")].update(row)
    for queue in queues:
        if queue.kind == Queue.Kind.ESCALATION:
            escalated = Output.objects.filter(status="escalated")
            counts[queue.pk]["pending"] = escalated.filter(
                Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
            ).count()
            counts[queue.pk]["in_review"] = escalated.filter(lease_expires_at__gte=now).count()
            counts[queue.pk]["done"] = Review.objects.filter(
                queue=queue, stage=Review.Stage.LEAD
            ).count()
    if user is not None:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        mine = (
            Review.objects.filter(reviewer=user, created_at__gte=start, queue_id__in=counts)
            .values("queue_id")
            .annotate(n=Count("id"))
        )
        for row in mine:
            counts[row["queue_id"]]["mine_today"] = row["n"]
    return counts


def outputs_visible_to(*, user: AbstractBaseUser) -> QuerySet[Output]:
    if can(user, "outputs.read"):
        return Output.objects.all()
    return Output.objects.none()


def reviews_visible_to(*, user: AbstractBaseUser) -> QuerySet[Review]:
    """Reviews are blind: a reviewer sees others' reviews of an item only once it resolved."""
    reviews = Review.objects.select_related("reviewer", "guideline_version", "queue")
    if can(user, "outputs.read"):
        return reviews
    return reviews.filter(
        Q(reviewer=user) | Q(output__status__in=[Output.Status.RESOLVED])
    ).exclude(Q(stage=Review.Stage.GOLD) & ~Q(reviewer=user))


@dataclass(frozen=True)
class Agreement:
    items: int
    percent_agreement: float | None
    cohens_kappa: float | None
    label_counts: dict[str, int]


def cohens_kappa(pairs: list[tuple[str, str]]) -> tuple[float | None, float | None]:
    """Percent agreement and Cohen's kappa for two raters' labels on the same items."""
    if not pairs:
        return None, None
    n = len(pairs)
    observed = sum(1 for a, b in pairs if a == b) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in set(first) | set(second)) / (n * n)
    if expected == 1:
        return observed, 1.0 if observed == 1 else 0.0
    return observed, (observed - expected) / (1 - expected)


def queue_agreement(*, queue: Queue) -> Agreement:
    """Agreement between the first and second review of each double-reviewed item.

    Reviewers differ from item to item, so "rater A" is whoever reviewed first and "rater B"
    whoever reviewed second: the usual reading of Cohen's kappa for rotating reviewers."""
    rows = (
        Review.objects.filter(queue=queue, stage=Review.Stage.REVIEW, undone_at__isnull=True)
        .order_by("output_id", "created_at", "id")
        .values_list("output_id", "decision")
    )
    firsts: dict[int, list[str]] = {}
    for output_id, decision in rows.iterator(chunk_size=5000):
        labels = firsts.setdefault(output_id, [])
        if len(labels) < 2:
            labels.append(decision)
    pairs = [(labels[0], labels[1]) for labels in firsts.values() if len(labels) == 2]
    observed, kappa = cohens_kappa(pairs)
    counts = Counter(label for pair in pairs for label in pair)
    return Agreement(len(pairs), observed, kappa, dict(counts))


def gold_agreement(*, queue: Queue | None = None) -> list[dict]:
    """Per reviewer: gold checks answered and how many matched the key."""
    checks = Review.objects.filter(stage=Review.Stage.GOLD, undone_at__isnull=True)
    if queue is not None:
        checks = checks.filter(queue=queue)
    rows = (
        checks.values("reviewer_id", "reviewer__username")
        .annotate(checks=Count("id"), agreed=Count("id", filter=Q(agrees_with_gold=True)))
        .order_by("reviewer__username")
    )
    return [
        {
            "reviewer": row["reviewer__username"],
            "checks": row["checks"],
            "agreed": row["agreed"],
            "rate": row["agreed"] / row["checks"] if row["checks"] else None,
        }
        for row in rows
    ]


def roles_of(user: AbstractBaseUser) -> list[str]:
    return sorted(user_roles(user))


# --- Reads for the reviewer workbench (reviews/views.py) ---

import uuid  # noqa: E402  (imports of the appended section)

from reviews.models import GuidelineVersion, Lease  # noqa: E402


def lease_held(*, user: AbstractBaseUser, queue: Queue) -> Lease | None:
    """The caller's live lease in this queue, if any, with its item.

    Reopening the workbench resumes it instead of claiming a second item, so a reload or an
    undo never leaves an item locked away until its lease runs out."""
    now = timezone.now()
    leases = (
        Lease.objects.select_related("output", "queue")
        .filter(reviewer=user, queue=queue, ended_at__isnull=True, expires_at__gt=now)
        .order_by("-claimed_at")
    )
    wanted = (
        Output.Status.ESCALATED if queue.kind == Queue.Kind.ESCALATION else Output.Status.PENDING
    )
    for lease in leases[:3]:
        if lease.is_gold:
            return lease
        # A lease can outlive its hold on the item: after it expired someone else may hold it,
        # or the item may have been decided by others meanwhile.
        if lease.output.lease_id == lease.pk and lease.output.status == wanted:
            return lease
    return None


def guidelines_current(*, queue: Queue) -> GuidelineVersion | None:
    return GuidelineVersion.objects.filter(queue=queue).order_by("-version").first()


@dataclass(frozen=True)
class OriginGuidelines:
    """The guidelines of the queue an escalated item came from, for the lead deciding it.

    `reviewed_under` holds the guideline versions the item's reviewers worked under (None for a
    review made while that queue had no guidelines), so that the lead knows when the rules
    shown are newer than the ones the reviewers read."""

    queue: Queue
    current: GuidelineVersion | None
    reviewed_under: tuple[int | None, ...]

    @property
    def reviewers_saw_other_rules(self) -> bool:
        if self.current is None or not self.reviewed_under:
            return False
        return any(version != self.current.version for version in self.reviewed_under)

    @property
    def reviewers_had_none(self) -> bool:
        return bool(self.reviewed_under) and all(v is None for v in self.reviewed_under)

    @property
    def reviewed_under_versions(self) -> list[int]:
        return sorted({version for version in self.reviewed_under if version is not None})


def guidelines_escalated_from(*, output: Output, reviews: list[Review]) -> OriginGuidelines | None:
    """The original queue's guidelines for an escalated item (its `queue` stays the queue it was
    routed to while the escalations queue serves it); None when it has no such queue."""
    if output.queue_id is None:
        return None
    origin = output.queue
    if origin.kind == Queue.Kind.ESCALATION:
        return None
    in_origin = [review for review in reviews if review.queue_id == origin.pk]
    used = {review.guideline_version_id for review in in_origin} - {None}
    numbers = dict(GuidelineVersion.objects.filter(pk__in=used).values_list("pk", "version"))
    reviewed_under = tuple(numbers.get(review.guideline_version_id) for review in in_origin)
    return OriginGuidelines(
        queue=origin, current=guidelines_current(queue=origin), reviewed_under=reviewed_under
    )


def reviews_for_lead(*, output: Output) -> list[Review]:
    """Every standing review of an escalated item, for the lead who decides it.

    Leads see them side by side; reviewers never get here (blind review), the workbench asks
    only for items leased from the escalations queue."""
    return list(
        Review.objects.select_related("reviewer")
        .filter(output=output, undone_at__isnull=True)
        .exclude(stage=Review.Stage.GOLD)
        .order_by("created_at", "id")
    )


def reviews_by(*, user: AbstractBaseUser, limit: int = 50) -> list[Review]:
    """The user's own latest decisions, newest first ("My reviews")."""
    return list(
        Review.objects.select_related("queue", "output")
        .filter(reviewer=user)
        .order_by("-created_at", "-id")[:limit]
    )


def lease_with_item(*, lease_id: uuid.UUID) -> Lease | None:
    return Lease.objects.select_related("output", "queue").filter(pk=lease_id).first()
