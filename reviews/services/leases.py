"""Claim-next under a lease, renew, release.

The claim is the hottest path in Signoff: one statement picks and leases the next item, and the
lease row is written in the same short transaction. Nothing here touches the audit chain.
"""

import random
import uuid
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from reviews.errors import LeaseLost, NotFound, PermissionRefused, QueueForbidden
from reviews.models import Lease, Output, Queue
from reviews.roles import can_work_queue

OUTPUT_TABLE = Output._meta.db_table
REVIEW_TABLE = "reviews_review"
LEASE_TABLE = Lease._meta.db_table

# PostgreSQL: lock the first available row and skip rows other claimers hold, so concurrent
# claims never wait on each other nor return the same item. now() is the database's clock.
# One statement picks the item, points it at the new lease and inserts the lease row: it runs
# as its own transaction (one round trip, no BEGIN/COMMIT), and the output -> lease foreign key
# is deferred to the end of that statement's transaction, when the lease row exists.
_PG_CLAIM = f"""
WITH picked AS (
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
    RETURNING id, lease_expires_at)
INSERT INTO {LEASE_TABLE} (id, output_id, queue_id, reviewer_id, is_gold, claimed_at, expires_at,
                           renewals, ended_at, end_reason)
SELECT %(lease)s, id, %(queue)s, %(user)s, false, now(), lease_expires_at, 0, NULL, ''
FROM picked
RETURNING output_id, claimed_at, expires_at
"""

# SQLite: inside a BEGIN IMMEDIATE transaction (writers are serialised by the database, so the
# row chosen cannot be taken by anyone else before we write it), insert the lease row for the
# chosen item, then point the item at it. In that order because pointing the output at a lease
# row that does not exist yet would make SQLite's deferred foreign-key check scan the whole
# output table when that lease is inserted. Two statements, no ORM, while the write lock is held.
_SQLITE_CLAIM = f"""
INSERT INTO {LEASE_TABLE} (id, output_id, queue_id, reviewer_id, is_gold, claimed_at, expires_at,
                           renewals, ended_at, end_reason)
SELECT %(lease)s, o.id, %(queue)s, %(user)s, 0, %(now)s, %(expires)s, 0, NULL, ''
FROM {OUTPUT_TABLE} o
WHERE {{scope}}
  AND (o.lease_expires_at IS NULL OR o.lease_expires_at < %(now)s)
  AND NOT EXISTS (
      SELECT 1 FROM {REVIEW_TABLE} r
      WHERE r.output_id = o.id AND r.reviewer_id = %(user)s AND r.undone_at IS NULL)
ORDER BY o.priority DESC, o.created_at, o.id
LIMIT 1
RETURNING output_id
"""
_SQLITE_POINT = f"UPDATE {OUTPUT_TABLE} SET lease_id = %s, lease_expires_at = %s WHERE id = %s"

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
    """Pick, lease and point: (output id, claimed at, expires at), or None when nothing is left.
    On PostgreSQL one statement (its own transaction); on SQLite the caller holds the write
    transaction."""
    scope = _SCOPE_ESCALATED if queue.kind == Queue.Kind.ESCALATION else _SCOPE_QUEUE
    params: dict[str, object] = {"queue": queue.pk, "user": user.pk}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            params |= {"lease": lease_id, "seconds": queue.lease_seconds}
            cursor.execute(_PG_CLAIM.format(scope=scope), params)
            row = cursor.fetchone()
            if row is None:
                return None
            return row[0], row[1], row[2]
        now = timezone.now()
        expires = now + timedelta(seconds=queue.lease_seconds)
        adapt = connection.ops.adapt_datetimefield_value
        params |= {"lease": lease_id.hex, "now": adapt(now), "expires": adapt(expires)}
        cursor.execute(_SQLITE_CLAIM.format(scope=scope), params)
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(_SQLITE_POINT, [lease_id.hex, params["expires"], row[0]])
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
    if connection.vendor == "postgresql":
        # One statement is its own transaction (or part of the caller's): no BEGIN/COMMIT or
        # savepoint round trips.
        row = _claim_row(queue, user, lease_id)
    else:
        with transaction.atomic():
            row = _claim_row(queue, user, lease_id)
    if row is None:
        return None
    output_id, claimed_at, expires_at = row
    # The row just written, as a model instance, without reading it back.
    lease = Lease(
        id=lease_id,
        output_id=output_id,
        queue=queue,
        reviewer=user,
        is_gold=False,
        claimed_at=_as_datetime(claimed_at),
        expires_at=_as_datetime(expires_at),
        renewals=0,
        ended_at=None,
        end_reason="",
    )
    lease._state.adding = False
    lease._state.db = connection.alias
    return lease


def held_lease_query(*, lock_output: bool = False) -> QuerySet[Lease]:
    """Leases with their queue, locked (the caller's transaction), with the database's clock
    read in the same statement on PostgreSQL. `lock_output` also joins and locks the output row
    in that one statement, for a caller that is about to change it."""
    # of=self and no_key: a plain FOR UPDATE (or one on the joined queue row) conflicts with the
    # foreign-key checks of concurrent claims and deadlocks; FOR NO KEY UPDATE does not.
    query = Lease.objects.select_related("queue")
    if lock_output:
        query = query.select_related("output").select_for_update(of=("self", "output"), no_key=True)
    else:
        query = query.select_for_update(of=("self",), no_key=True)
    if connection.vendor == "postgresql":
        query = query.annotate(db_clock=RawSQL("now()", ()))
    return query


def check_held(lease: Lease | None, user: AbstractBaseUser) -> Lease:
    """The lease (read by held_lease_query) if the caller holds it live; else raise why not."""
    if lease is None:
        raise NotFound("No such lease.")
    if lease.reviewer_id != user.pk:
        raise PermissionRefused("This lease belongs to another reviewer.")
    if lease.ended_at is not None:
        raise LeaseLost(f"This lease already ended ({lease.end_reason}).")
    now = getattr(lease, "db_clock", None) or timezone.now()
    if lease.expires_at <= now:
        raise LeaseLost("This lease expired; the item went back to the queue.")
    return lease


def _held_lease(
    lease_id: uuid.UUID | str, user: AbstractBaseUser, *, check_output: bool = True
) -> Lease:
    """Lock and return the caller's live lease, or raise why they do not hold one.

    check_output=False leaves checking that the output still points at this lease to a caller
    that locks the output row anyway."""
    lease = check_held(held_lease_query().filter(pk=lease_id).first(), user)
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
    now = getattr(lease, "db_clock", None) or db_now()
    expires = now + timedelta(seconds=lease.queue.lease_seconds)
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
