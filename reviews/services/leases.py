"""Claim-next under a lease, renew, release.

The claim is the hottest path in Signoff: one statement picks and leases the next item, and the
lease row is written in the same short transaction. Nothing here touches the audit chain.
"""

import random
import uuid
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from reviews.errors import LeaseLost, NotFound, PermissionRefused, QueueForbidden
from reviews.models import Lease, Output, Queue
from reviews.roles import can_work_queue

OUTPUT_TABLE = Output._meta.db_table
REVIEW_TABLE = "reviews_review"

# PostgreSQL: lock the first available row and skip rows other claimers hold, so concurrent
# claims never wait on each other nor return the same item. now() is the database's clock.
_PG_CLAIM = f"""
UPDATE {OUTPUT_TABLE} SET lease_id = %(lease)s,
       lease_expires_at = now() + make_interval(secs => %(seconds)s)
WHERE id = (
    SELECT o.id FROM {OUTPUT_TABLE} o
    WHERE {{scope}}
      AND (o.lease_expires_at IS NULL OR o.lease_expires_at < now())
      AND NOT EXISTS (
          SELECT 1 FROM {REVIEW_TABLE} r
          WHERE r.output_id = o.id AND r.reviewer_id = %(user)s AND r.undone_at IS NULL)
    ORDER BY o.priority DESC, o.created_at, o.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING id, now(), lease_expires_at
"""

# SQLite: one conditional UPDATE inside a BEGIN IMMEDIATE transaction (writers are serialised
# by the database, so the row chosen cannot be taken by anyone else before we write it). It sets
# only the expiry: pointing at a lease row that does not exist yet would make SQLite's deferred
# foreign-key check scan the whole output table when that lease is inserted.
_SQLITE_CLAIM = f"""
UPDATE {OUTPUT_TABLE} SET lease_expires_at = %(expires)s
WHERE id = (
    SELECT o.id FROM {OUTPUT_TABLE} o
    WHERE {{scope}}
      AND (o.lease_expires_at IS NULL OR o.lease_expires_at < %(now)s)
      AND NOT EXISTS (
          SELECT 1 FROM {REVIEW_TABLE} r
          WHERE r.output_id = o.id AND r.reviewer_id = %(user)s AND r.undone_at IS NULL)
    ORDER BY o.priority DESC, o.created_at, o.id
    LIMIT 1)
RETURNING id
"""

_SCOPE_QUEUE = "o.queue_id = %(queue)s AND o.status = 'pending'"
_SCOPE_ESCALATED = "o.status = 'escalated'"


def db_now() -> datetime:
    """The database's clock on PostgreSQL (leases compare against it); local time on SQLite,
    whose clock is this machine's."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            return cursor.fetchone()[0]
    return timezone.now()


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    parsed = parse_datetime(str(value))
    assert parsed is not None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _claim_row(queue: Queue, user: AbstractBaseUser, lease_id: uuid.UUID):
    scope = _SCOPE_ESCALATED if queue.kind == Queue.Kind.ESCALATION else _SCOPE_QUEUE
    params: dict[str, object] = {
        "queue": queue.pk,
        "user": user.pk,
        "seconds": queue.lease_seconds,
    }
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_CLAIM.format(scope=scope), {**params, "lease": lease_id})
            row = cursor.fetchone()
            if row is None:
                return None
            return row[0], row[1], row[2]
        now = timezone.now()
        expires = now + timedelta(seconds=queue.lease_seconds)
        params["now"] = connection.ops.adapt_datetimefield_value(now)
        params["expires"] = connection.ops.adapt_datetimefield_value(expires)
        cursor.execute(_SQLITE_CLAIM.format(scope=scope), params)
        row = cursor.fetchone()
        if row is None:
            return None
        return row[0], now, expires


def _claim_gold(queue: Queue, user: AbstractBaseUser) -> Lease | None:
    """Serve a gold item: a resolved item whose answer is known. Several reviewers may hold the
    same gold item at once; it is never changed by their answers."""
    gold = (
        Output.objects.filter(queue=queue, is_gold=True)
        .exclude(reviews__reviewer=user, reviews__undone_at__isnull=True)
        .order_by("?")
        .first()
    )
    if gold is None:
        return None
    now = db_now()
    return Lease.objects.create(
        output=gold,
        queue=queue,
        reviewer=user,
        is_gold=True,
        claimed_at=now,
        expires_at=now + timedelta(seconds=queue.lease_seconds),
    )


def queue_claim_next(
    *, queue: Queue, user: AbstractBaseUser, rng: random.Random | None = None
) -> Lease | None:
    """Lease the most urgent item (priority, then oldest) this reviewer has not reviewed yet.

    Returns None when the queue has nothing left for them. Expired leases count as free, so
    abandoned items return to the queue without any sweeper."""
    if not can_work_queue(user, queue):
        raise QueueForbidden(f"You may not work the queue '{queue.name}'.")
    if not queue.is_active:
        raise QueueForbidden(f"The queue '{queue.name}' is closed.")
    if queue.gold_rate > 0 and (rng or random).random() < queue.gold_rate:
        with transaction.atomic():
            lease = _claim_gold(queue, user)
        if lease is not None:
            return lease
    lease_id = uuid.uuid4()
    with transaction.atomic():
        row = _claim_row(queue, user, lease_id)
        if row is None:
            return None
        output_id, claimed_at, expires_at = row
        # On PostgreSQL the output already points at this id (the foreign key is checked at
        # commit); on SQLite it is pointed at it once the lease row exists.
        lease = Lease.objects.create(
            id=lease_id,
            output_id=output_id,
            queue=queue,
            reviewer=user,
            claimed_at=_as_datetime(claimed_at),
            expires_at=_as_datetime(expires_at),
        )
        if connection.vendor != "postgresql":
            Output.objects.filter(pk=output_id).update(lease_id=lease_id)
        return lease


def _held_lease(
    lease_id: uuid.UUID | str, user: AbstractBaseUser, *, check_output: bool = True
) -> Lease:
    """Lock and return the caller's live lease, or raise why they do not hold one.

    check_output=False leaves checking that the output still points at this lease to a caller
    that locks the output row anyway."""
    # of=self and no_key: a plain FOR UPDATE (or one on the joined queue row) conflicts with the
    # foreign-key checks of concurrent claims and deadlocks; FOR NO KEY UPDATE does not.
    lease = (
        Lease.objects.select_for_update(of=("self",), no_key=True)
        .select_related("queue")
        .filter(pk=lease_id)
        .first()
    )
    if lease is None:
        raise NotFound("No such lease.")
    if lease.reviewer_id != user.pk:
        raise PermissionRefused("This lease belongs to another reviewer.")
    if lease.ended_at is not None:
        raise LeaseLost(f"This lease already ended ({lease.end_reason}).")
    if lease.expires_at <= db_now():
        raise LeaseLost("This lease expired; the item went back to the queue.")
    if check_output and not lease.is_gold:
        # An expired lease may have been taken over and, since, expired again: the output must
        # still point at this very lease.
        current = Output.objects.filter(pk=lease.output_id).values_list("lease_id", flat=True)
        if current.first() != lease.pk:
            raise LeaseLost("Another reviewer has this item now.")
    return lease


@transaction.atomic
def lease_renew(*, lease_id: uuid.UUID | str, user: AbstractBaseUser) -> Lease:
    lease = _held_lease(lease_id, user)
    expires = db_now() + timedelta(seconds=lease.queue.lease_seconds)
    if not lease.is_gold:
        updated = Output.objects.filter(pk=lease.output_id, lease_id=lease.pk).update(
            lease_expires_at=expires
        )
        if updated != 1:
            raise LeaseLost("Another reviewer has this item now.")
    lease.expires_at = expires
    lease.renewals += 1
    lease.save(update_fields=["expires_at", "renewals"])
    return lease


@transaction.atomic
def lease_release(*, lease_id: uuid.UUID | str, user: AbstractBaseUser) -> Lease:
    """Skip: give the item back to the queue at once."""
    lease = _held_lease(lease_id, user)
    lease_end(lease, Lease.EndReason.RELEASED)
    return lease


def lease_end(lease: Lease, reason: str, **output_changes: object) -> None:
    """Close the lease and free the output, applying `output_changes` in the same statement
    (caller holds the transaction and the row locks)."""
    lease.ended_at = timezone.now()
    lease.end_reason = reason
    lease.save(update_fields=["ended_at", "end_reason"])
    if not lease.is_gold:
        Output.objects.filter(pk=lease.output_id, lease_id=lease.pk).update(
            lease=None, lease_expires_at=None, **output_changes
        )
