"""Sealing: chaining committed audit events, in id order, in batches, under the head's lock.

Appenders insert events unsealed (no `seq`, `prev_hash`, `hash`) in their own transaction and
never touch the head, so decisions no longer queue behind one another. The sealer gives each
event its place in the chain, in id order, which anyone can check afterwards: along the chain
the ids only grow (docs/architecture.md, "The audit log at database speed").

Id order is only safe to seal below the *horizon*: the largest id below which no event can still
appear. On SQLite one writer at a time commits (every transaction begins IMMEDIATE) and a new
row's id is larger than every id committed before it, so whatever the sealer's write transaction
sees is final: no horizon is needed. On PostgreSQL a smaller id can commit after a larger one
(ids come from a sequence, commits in any order), so:

1. every appender takes a shared transaction-level advisory lock (AUDIT_LOCK) *before* its
   events get their ids; shared, so appenders never wait for one another;
2. the sealer reads the sequence's last value N, then lists the transactions holding that lock
   (in this database, other than its own), and waits for those to end (commit or roll back);
3. every event with id <= N was given its id by a transaction that had already taken the lock,
   so it has now committed or rolled back: events up to N are final, and are sealed in id order.

Transactions that take the lock after step 2 give ids larger than N: the next pass seals them.
A stuck appender therefore holds sealing back (and `verify_audit` says so once the lag passes the
setting); it never lets an event be sealed out of order.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.audit.hashing import GENESIS_HASH, event_hash
from core.models import AuditEvent, AuditHead

log = logging.getLogger(__name__)

# pg_advisory_xact_lock_shared(key1, key2): an arbitrary pair of int4 naming "audit appenders".
AUDIT_LOCK = (0x5349474E, 0x41554454)  # "SIGN", "AUDT"
SEAL_BATCH = 1000
DEFAULT_LAG_SECONDS = 60.0
# How long a sealer run on read (verify, a compliance report) waits for appenders still running.
ON_READ_WAIT_SECONDS = 5.0

_HOLDERS = """
    SELECT virtualtransaction FROM pg_locks
     WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND classid = %s::oid AND objid = %s::oid AND objsubid = 2
"""


def seal_lag_limit() -> float:
    """Seconds an event may wait for its seal before `verify_audit` fails
    (AUDIT_SEAL_LAG_SECONDS)."""
    return float(getattr(settings, "AUDIT_SEAL_LAG_SECONDS", DEFAULT_LAG_SECONDS))


def sealing_inline() -> bool:
    """AUDIT_SEALING = "inline": appenders lock the head and seal their own events before they
    commit (the behaviour before the sealer: one decision at a time, every event sealed at
    once). For test suites that read `seq` right after appending, and to measure the old path.
    The default, "deferred", is what production runs."""
    return getattr(settings, "AUDIT_SEALING", "deferred") == "inline"


def mark_appending() -> None:
    """Step 1 above, before the events get their ids: lets the sealer wait for this
    transaction without anyone else waiting for it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", AUDIT_LOCK)


def locked_head() -> AuditHead:
    head = AuditHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        try:
            with transaction.atomic():
                AuditHead.objects.create(pk=1, seq=0, hash=GENESIS_HASH)
        except IntegrityError:
            pass  # another sealer created it first; lock theirs
        head = AuditHead.objects.select_for_update().get(pk=1)
    return head


def _horizon(wait_seconds: float) -> int | None:
    """The largest id below which every event is final, or None when no bound is needed
    (SQLite). -1 when appenders still running after `wait_seconds` keep anything new from being
    sealed now."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)",
            [AuditEvent._meta.db_table],
        )
        (last,) = cursor.fetchone()
        if last is None:
            return 0  # no id given out yet
        # Only after reading N: whoever holds an id <= N took the lock before, so is listed.
        cursor.execute(_HOLDERS, AUDIT_LOCK)
        holders = [row[0] for row in cursor.fetchall()]
        deadline = time.monotonic() + wait_seconds
        pause = 0.001
        while holders:
            if time.monotonic() >= deadline:
                return -1
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            cursor.execute(_HOLDERS + " AND virtualtransaction = ANY(%s)", [*AUDIT_LOCK, holders])
            holders = [row[0] for row in cursor.fetchall()]
    return last


@dataclass(frozen=True)
class SealResult:
    sealed: int
    head_seq: int
    waiting: bool  # appenders still running kept the newest events from being sealed
    refused: str = ""  # the head does not match the log: sealing stopped, verify names why


def audit_seal(
    *, wait_seconds: float = ON_READ_WAIT_SECONDS, limit: int | None = None
) -> SealResult:
    """Seal every final unsealed event, in id order, in batches of SEAL_BATCH (each its own
    transaction unless the caller is inside one). Idempotent; concurrent sealers take turns on
    the head's row lock, and no appender ever waits for a sealer."""
    horizon = _horizon(wait_seconds)
    if horizon == -1:
        head = AuditHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0
        return SealResult(sealed=0, head_seq=head, waiting=True)
    sealed = 0
    while True:
        with transaction.atomic():
            done, head_seq, refused = seal_locked(locked_head(), horizon=horizon, batch=SEAL_BATCH)
        sealed += done
        if refused or done < SEAL_BATCH or (limit is not None and sealed >= limit):
            return SealResult(sealed=sealed, head_seq=head_seq, waiting=False, refused=refused)


def seal_locked(head: AuditHead, *, horizon: int | None, batch: int) -> tuple[int, int, str]:
    """With the head locked: seal up to `batch` events after the head's event, id <= horizon.
    Returns (events sealed, head seq, why sealing was refused or "")."""
    after_id = 0
    if head.seq:
        last = AuditEvent.objects.filter(seq=head.seq).values_list("id", "hash").first()
        if last is None or last[1] != head.hash:
            # Someone changed the log or the head: chaining onto it would hide that. verify_audit
            # names the event; sealing resumes once the log is whole again.
            why = f"the head #{head.seq} does not match the log; sealing stopped"
            log.error("audit sealer: %s", why)
            return 0, head.seq, why
        after_id = last[0]
    events = AuditEvent.objects.filter(id__gt=after_id)
    if horizon is not None:
        events = events.filter(id__lte=horizon)
    rows = list(events.order_by("id")[:batch])
    seq, prev_hash, seals = head.seq, head.hash, []
    for event in rows:
        if event.seq is not None:
            why = f"event #{event.seq} is sealed past the head #{head.seq}; sealing stopped"
            log.error("audit sealer: %s", why)
            return _write(head, seals, seq, prev_hash), seq, why
        seq += 1
        digest = event_hash(
            prev_hash=prev_hash,
            seq=seq,
            created_at=event.created_at,
            actor_id=event.actor_id,
            actor_name=event.actor_name,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            payload=event.payload,
        )
        seals.append((seq, prev_hash, digest, event.pk))
        event.seq, event.prev_hash, event.hash = seq, prev_hash, digest
        prev_hash = digest
    return _write(head, seals, seq, prev_hash), seq, ""


def _write(head: AuditHead, seals: list[tuple], seq: int, prev_hash: str) -> int:
    if not seals:
        return 0
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        # The one UPDATE the append-only guard lets through: the seal, once (core migration 0002).
        cursor.executemany(
            f"UPDATE {table} SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s", seals
        )
    AuditHead.objects.filter(pk=1).update(seq=seq, hash=prev_hash)
    head.seq, head.hash = seq, prev_hash
    return len(seals)


@dataclass(frozen=True)
class SealingStatus:
    """How far the chain is sealed, for verify_audit, the verify page and the API."""

    sealed_seq: int
    unsealed: int
    oldest_unsealed_at: datetime | None
    lag_seconds: float  # age of the oldest event still waiting for its seal (0 when none)
    lag_limit_seconds: float

    @property
    def overdue(self) -> bool:
        return self.unsealed > 0 and self.lag_seconds > self.lag_limit_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "sealed_seq": self.sealed_seq,
            "unsealed": self.unsealed,
            "oldest_unsealed_at": (
                self.oldest_unsealed_at.isoformat() if self.oldest_unsealed_at else None
            ),
            "seal_lag_seconds": round(self.lag_seconds, 3),
            "seal_lag_limit_seconds": self.lag_limit_seconds,
            "sealing_overdue": self.overdue,
        }


def audit_sealing_status() -> SealingStatus:
    """Counts only committed events (and the caller's own): one still in a running transaction
    is not in the log yet."""
    sealed_seq = AuditHead.objects.filter(pk=1).values_list("seq", flat=True).first() or 0
    unsealed = AuditEvent.objects.filter(seq__isnull=True)
    count = unsealed.count()
    oldest = unsealed.order_by("id").values_list("created_at", flat=True).first()
    now = timezone.now()
    lag = max((now - oldest) / timedelta(seconds=1), 0.0) if oldest else 0.0
    return SealingStatus(
        sealed_seq=sealed_seq,
        unsealed=count,
        oldest_unsealed_at=oldest,
        lag_seconds=lag,
        lag_limit_seconds=seal_lag_limit(),
    )


def audit_seal_step() -> int:
    """The maintenance step (`run_maintenance`): seal what is final, waiting a while for
    appenders still running; returns how many events it sealed."""
    return audit_seal(wait_seconds=min(seal_lag_limit() / 2, 10.0)).sealed
