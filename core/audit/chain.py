"""The hash-chained audit log: append inside the caller's transaction (unsealed, no lock), seal
later in id order (core/audit/sealer.py), verify the whole chain or only what came after a head
(sequence number and hash) taken earlier."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from core.audit.hashing import GENESIS_HASH, canonical_json, event_hash
from core.audit.sealer import (
    SealingStatus,
    audit_seal,
    audit_sealing_status,
    locked_head,
    mark_appending,
    seal_locked,
    sealing_inline,
)
from core.errors import AuditChainBroken
from core.models import AuditEvent, AuditHead

__all__ = ["GENESIS_HASH", "canonical_json", "event_hash"]


def audit_append(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    object_type: str,
    object_id: object,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. Must run inside the transaction of the change it records: the event
    commits or rolls back with it. It takes no lock that another appender waits for; the sealer
    chains it once it is committed (its `seq` and `hash` are empty until then)."""
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
    """Append several events of one change in one INSERT (each event is a dict of action,
    object_type, object_id and payload); they get consecutive places in the chain only if no
    other transaction's ids fall between theirs, which nothing relies on."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_append must run inside the transaction of the change")
    actor_id = actor.pk if actor is not None and actor.pk is not None else None
    actor_name = actor.get_username() if actor_id is not None else "system"
    inline = sealing_inline()
    # Inline: the head's lock first, so ids are given out in the order they will be sealed.
    head = locked_head() if inline else None
    if head is None:
        mark_appending()
    rows = []
    for spec in events:
        # Round-trip through JSON so that what is hashed is exactly what the database returns.
        payload = json.loads(canonical_json(spec.get("payload") or {}))
        rows.append(
            AuditEvent(
                created_at=timezone.now(),
                actor_id=actor_id,
                actor_name=actor_name,
                action=spec["action"],
                object_type=spec["object_type"],
                object_id=str(spec["object_id"]),
                payload=payload,
            )
        )
    AuditEvent.objects.bulk_create(rows)
    if head is not None:
        seal_locked(head, horizon=None, batch=len(rows) + 1000)
        sealed = AuditEvent.objects.only("seq", "prev_hash", "hash").in_bulk([r.pk for r in rows])
        for row in rows:
            row.seq, row.prev_hash, row.hash = (
                sealed[row.pk].seq,
                sealed[row.pk].prev_hash,
                sealed[row.pk].hash,
            )
    return rows


def _events_in_order(*, after: int = 0, batch: int = 2000) -> Iterator[AuditEvent]:
    last = after
    while True:
        chunk = list(AuditEvent.objects.filter(seq__gt=last).order_by("seq")[:batch])
        if not chunk:
            return
        yield from chunk
        last = chunk[-1].seq


def audit_verify(*, seal: bool = True) -> int:
    """Seal what is final (unless `seal` is False), then check every link of the sealed chain,
    the published head, and that no unsealed event hides below it; return the number of sealed
    events.

    Raises AuditChainBroken naming the first event (by sequence number) that does not hold."""
    if seal:
        audit_seal()
    last, _checked = _chain_verify()
    return last.seq if last is not None else 0


def audit_verified_head() -> dict[str, Any]:
    """Seal every event committed so far, verify the whole chain (as audit_verify) and return
    its head: the sequence number and hash of the last event verified, when that event was
    written and when it was verified.

    A report that carries the head lets an auditor check later, with audit_verify_against_head,
    that the log still holds every event up to it unchanged: the hash of event #seq commits to
    every event before it."""
    audit_seal()
    last, _checked = _chain_verify()
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
    sealing: SealingStatus
    broken_at: int | None = None
    problem: str = ""


def audit_chain_check() -> AuditChainCheck:
    """Seal, verify the chain as audit_verify does, and say how it stands instead of raising:
    the number of sealed events, the published head, how far sealing lags, and where and why
    the chain breaks, if it does."""
    audit_seal()
    head = AuditHead.objects.filter(pk=1).values("seq", "hash").first() or {
        "seq": 0,
        "hash": GENESIS_HASH,
    }
    sealing = audit_sealing_status()
    try:
        count = audit_verify(seal=False)
    except AuditChainBroken as broken:
        return AuditChainCheck(
            verified=False,
            events=AuditEvent.objects.filter(seq__isnull=False).count(),
            head_seq=head["seq"],
            head_hash=head["hash"],
            sealing=sealing,
            broken_at=broken.seq,
            problem=broken.message,
        )
    return AuditChainCheck(
        verified=True, events=count, head_seq=head["seq"], head_hash=head["hash"], sealing=sealing
    )


def _anchor(*, seq: int, head_hash: str) -> AuditEvent | None:
    """Event #`seq` as a head taken earlier names it (None for the empty log's head). Raises
    AuditChainBroken naming it when it is missing (the log was truncated) or has another hash
    (the log was rewritten)."""
    head_hash = head_hash.strip().lower()
    if seq == 0 and head_hash == GENESIS_HASH:  # the empty log's head names no event
        return None
    event = AuditEvent.objects.filter(seq=seq).first()
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
    return event


def audit_verify_against_head(*, seq: int, head_hash: str) -> int:
    """Check the log against a head taken earlier (from a compliance report): event #`seq`
    must still exist with hash `head_hash`, then the whole chain must verify. Returns the
    number of events.

    The chain alone cannot tell a log rewritten with every hash recomputed from the original;
    the head, kept outside the database, can. Raises AuditChainBroken naming event #`seq` when
    it is missing (the log was truncated) or has another hash (the log was rewritten)."""
    audit_seal()
    _anchor(seq=seq, head_hash=head_hash)
    return audit_verify(seal=False)


@dataclass(frozen=True)
class IncrementalVerification:
    events: int  # the chain's length: the sequence number of its last event
    checked: int  # events read and checked: those after the anchor


def audit_verify_since(*, seq: int, head_hash: str) -> IncrementalVerification:
    """Verify only what was sealed after a head taken (and verified) earlier: event #`seq` must
    still have hash `head_hash`, and every event after it must link on from it up to the
    published head. Reads the events after #`seq`, not the whole log.

    What this proves: the log still extends the head taken earlier, and everything after it is
    intact. Events before #`seq` were checked when that head was taken; a change to one of them
    that left every stored hash alone is found only by a full verification, so run that too,
    less often (docs/operations.md)."""
    audit_seal()
    anchor = _anchor(seq=seq, head_hash=head_hash)
    last, checked = _chain_verify(anchor=anchor)
    return IncrementalVerification(events=last.seq if last is not None else 0, checked=checked)


def _chain_verify(*, anchor: AuditEvent | None = None) -> tuple[AuditEvent | None, int]:
    """Check every link of the sealed chain (after `anchor`, already checked, if given), the
    published head, and that no unsealed event sits below the last sealed one. Returns the
    last event (None for an empty log) and how many events were checked. Raises
    AuditChainBroken naming the first event that does not hold."""
    expected_prev = anchor.hash if anchor is not None else GENESIS_HASH
    expected_seq = anchor.seq + 1 if anchor is not None else 1
    last_id = anchor.pk if anchor is not None else 0
    checked = 0
    last = anchor
    for event in _events_in_order(after=expected_seq - 1):
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
        if event.pk <= last_id:
            # Sealed in id order, always: a smaller id after a larger one was moved.
            raise AuditChainBroken(
                event.seq,
                f"event #{event.seq} (id {event.pk}) is out of order: it comes after an event "
                f"with id {last_id}, and the log is sealed in id order",
            )
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
        last_id = event.pk
        last = event
    end = expected_seq - 1
    head = AuditHead.objects.filter(pk=1).first()
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    if head_seq > end:
        raise AuditChainBroken(
            end + 1,
            f"chain ends at #{end} but the published head is #{head_seq}: "
            "events were removed from the tail",
        )
    if head_seq < end:
        raise AuditChainBroken(
            head_seq + 1,
            f"event #{head_seq + 1} is past the published head (#{head_seq}): "
            "events were added without moving the head",
        )
    if head_hash != expected_prev:
        raise AuditChainBroken(
            end, f"the published head does not match event #{end}: the head was altered"
        )
    _no_unsealed_below(last_id)
    return last, checked


def _no_unsealed_below(last_id: int) -> None:
    """The sealer seals in id order and only ids that are final, so an unsealed event with a
    smaller id than a sealed one was inserted afterwards, behind the sealer's back."""
    stray = (
        AuditEvent.objects.filter(seq__isnull=True, id__lt=last_id)
        .order_by("id")
        .only("id", "action", "created_at")
        .first()
    )
    if stray is None:
        return
    after = (
        AuditEvent.objects.filter(seq__isnull=False, id__gt=stray.pk)
        .order_by("id")
        .values_list("seq", flat=True)
        .first()
    )
    raise AuditChainBroken(
        after,
        f"an unsealed event (id {stray.pk}, {stray.action}, written "
        f"{stray.created_at.isoformat()}) sits before event #{after}: it was inserted below "
        "the sealed chain",
    )


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
