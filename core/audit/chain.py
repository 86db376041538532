"""The hash-chained audit log: append inside the caller's transaction, verify the whole chain,
and check it against a head (sequence number and hash) taken earlier."""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from core.errors import AuditChainBroken
from core.models import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    *,
    prev_hash: str,
    seq: int,
    created_at: datetime,
    actor_id: int | None,
    actor_name: str,
    action: str,
    object_type: str,
    object_id: str,
    payload: Any,
) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "created_at": _timestamp(created_at),
            "actor_id": actor_id,
            "actor_name": actor_name,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "payload": payload,
        }
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _locked_head() -> AuditHead:
    head = AuditHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        try:
            with transaction.atomic():
                AuditHead.objects.create(pk=1, seq=0, hash=GENESIS_HASH)
        except IntegrityError:
            pass  # another writer created it first; lock theirs
        head = AuditHead.objects.select_for_update().get(pk=1)
    return head


def audit_append(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    object_type: str,
    object_id: object,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. Must run inside the transaction of the change it records, as late in
    it as possible: the head's row lock serialises appenders until that transaction ends."""
    return audit_append_many(
        actor=actor,
        events=[
            {
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "payload": payload,
            }
        ],
    )[0]


def audit_append_many(
    *, actor: AbstractBaseUser | None, events: list[dict[str, Any]]
) -> list[AuditEvent]:
    """Append several events of one change under a single lock of the head (each event is a
    dict of action, object_type, object_id and payload)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_append must run inside the transaction of the change")
    actor_id = actor.pk if actor is not None and actor.pk is not None else None
    actor_name = actor.get_username() if actor_id is not None else "system"
    head = _locked_head()
    seq, prev_hash = head.seq, head.hash
    rows = []
    for spec in events:
        seq += 1
        # Round-trip through JSON so that what is hashed is exactly what the database returns.
        payload = json.loads(canonical_json(spec.get("payload") or {}))
        fields = {
            "seq": seq,
            "created_at": timezone.now(),
            "actor_id": actor_id,
            "actor_name": actor_name,
            "action": spec["action"],
            "object_type": spec["object_type"],
            "object_id": str(spec["object_id"]),
            "payload": payload,
        }
        digest = event_hash(prev_hash=prev_hash, **fields)
        rows.append(AuditEvent(**fields, prev_hash=prev_hash, hash=digest))
        prev_hash = digest
    AuditEvent.objects.bulk_create(rows)
    AuditHead.objects.filter(pk=1).update(seq=seq, hash=prev_hash)
    return rows


def _events_in_order(batch: int = 2000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        chunk = list(AuditEvent.objects.filter(seq__gt=last).order_by("seq")[:batch])
        if not chunk:
            return
        yield from chunk
        last = chunk[-1].seq


def audit_verify() -> int:
    """Check every link of the chain and the published head; return the number of events.

    Raises AuditChainBroken naming the first event (by sequence number) that does not hold.
    """
    last = _chain_verify()
    return last.seq if last is not None else 0


def audit_verified_head() -> dict[str, Any]:
    """Verify the whole chain (as audit_verify) and return its head: the sequence number and
    hash of the last event verified, when that event was written and when it was verified.

    A report that carries the head lets an auditor check later, with audit_verify_against_head,
    that the log still holds every event up to it unchanged: the hash of event #seq commits to
    every event before it."""
    last = _chain_verify()
    return {
        "seq": last.seq if last is not None else 0,
        "hash": last.hash if last is not None else GENESIS_HASH,
        "event_at": last.created_at.isoformat() if last is not None else None,
        "verified_at": timezone.now().isoformat(),
    }


@dataclass(frozen=True)
class AuditChainCheck:
    """The outcome of verifying the whole chain, for the auditors' page."""

    verified: bool
    events: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None
    problem: str = ""


def audit_chain_check() -> AuditChainCheck:
    """Verify the chain as audit_verify does, and say how it stands instead of raising: the
    number of events in the log, the published head, and where and why it breaks, if it does."""
    head = AuditHead.objects.filter(pk=1).values("seq", "hash").first() or {
        "seq": 0,
        "hash": GENESIS_HASH,
    }
    try:
        count = audit_verify()
    except AuditChainBroken as broken:
        return AuditChainCheck(
            verified=False,
            events=AuditEvent.objects.count(),
            head_seq=head["seq"],
            head_hash=head["hash"],
            broken_at=broken.seq,
            problem=broken.message,
        )
    return AuditChainCheck(
        verified=True, events=count, head_seq=head["seq"], head_hash=head["hash"]
    )


def audit_verify_against_head(*, seq: int, head_hash: str) -> int:
    """Check the log against a head taken earlier (from a compliance report): event #`seq`
    must still exist with hash `head_hash`, then the whole chain must verify. Returns the
    number of events.

    The chain alone cannot tell a log rewritten with every hash recomputed from the original;
    the head, kept outside the database, can. Raises AuditChainBroken naming event #`seq` when
    it is missing (the log was truncated) or has another hash (the log was rewritten)."""
    head_hash = head_hash.strip().lower()
    if seq != 0 or head_hash != GENESIS_HASH:  # the empty log's head names no event
        event = AuditEvent.objects.filter(seq=seq).only("hash").first()
        if event is None:
            last = AuditEvent.objects.aggregate(last=Max("seq"))["last"] or 0
            raise AuditChainBroken(
                seq,
                f"event #{seq} named by the head is missing (the log ends at #{last}): "
                "the log was truncated since the head was taken",
            )
        if event.hash != head_hash:
            raise AuditChainBroken(
                seq,
                f"event #{seq} has hash {event.hash[:16]}… but the head recorded "
                f"{head_hash[:16]}…: the log was rewritten since the head was taken",
            )
    return audit_verify()


def _chain_verify() -> AuditEvent | None:
    """Check every link of the chain and the published head; return the last event (None for
    an empty log). Raises AuditChainBroken naming the first event that does not hold."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    last = None
    for event in _events_in_order():
        if event.seq != expected_seq:
            raise AuditChainBroken(
                expected_seq, f"event #{expected_seq} is missing (next found is #{event.seq})"
            )
        self_consistent = _recomputed_hash(event) == event.hash
        if event.prev_hash != expected_prev:
            if self_consistent and event.seq > 1:
                # This event is intact and still names the predecessor's original hash: the
                # predecessor was rewritten and its own hash recomputed to match.
                raise AuditChainBroken(
                    event.seq - 1,
                    f"event #{event.seq - 1} was altered (its hash was recomputed; "
                    f"event #{event.seq} still links to the original)",
                )
            raise AuditChainBroken(
                event.seq, f"event #{event.seq} does not link to its predecessor"
            )
        if not self_consistent:
            raise AuditChainBroken(event.seq, f"event #{event.seq} was altered (hash mismatch)")
        expected_prev = event.hash
        expected_seq += 1
        count += 1
        last = event
    head = AuditHead.objects.filter(pk=1).first()
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    if head_seq > count:
        raise AuditChainBroken(
            count + 1,
            f"chain ends at #{count} but the published head is #{head_seq}: "
            "events were removed from the tail",
        )
    if head_seq < count:
        raise AuditChainBroken(
            head_seq + 1,
            f"event #{head_seq + 1} is past the published head (#{head_seq}): "
            "events were added without moving the head",
        )
    if head_hash != expected_prev:
        raise AuditChainBroken(
            count, f"the published head does not match event #{count}: the head was altered"
        )
    return last


def _recomputed_hash(event: AuditEvent) -> str:
    return event_hash(
        prev_hash=event.prev_hash,
        seq=event.seq,
        created_at=event.created_at,
        actor_id=event.actor_id,
        actor_name=event.actor_name,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        payload=event.payload,
    )
