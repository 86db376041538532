"""The job machinery every kind of background job shares: who a worker is, the heartbeat that
keeps a lease alive, the sweep that takes back leases whose worker went silent, and the resend
of jobs whose broker message was lost.

The database, not the broker, is the source of truth. A worker claims a job by a
compare-and-set on its row (lease owner, heartbeat, attempts) and renews the heartbeat while it
works; a second delivery of the same message finds the job claimed and does nothing, which is
what makes every resend here safe. A periodic sweep (`run_maintenance`) takes back what a dead
worker or a lost message left behind.

Each kind of job (a training run, an evaluation, a dataset build, a "Try it" question, a
webhook delivery) declares a `JobSpec` in its own app: its model and the names its lease
columns have there (each kind keeps its columns, so nothing migrates), its settings, its
Dramatiq actor and send, and the moves its app makes when the sweep decides (requeue, fail,
cancel: each app keeps its own transitions, audit events and errors). Core imports no app:
all of that comes in through the spec.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from core.audit import audit_append

logger = logging.getLogger(__name__)

# How long a queued job's message may be missing from the broker before a sweep sends it again
# (it covers the moment between commit and send), where settings do not name it.
DEFAULT_RESEND_AFTER_SECONDS = 60

# A sweep's move on one job, made inside the sweep's transaction with the row locked:
# move(row, why_lost, now) -> False when the job changed under it (nothing is reported).
Move = Callable[[Any, str, datetime], bool]


def worker_owner() -> str:
    """Who holds a lease: host, process and thread, so a log line names the worker."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def gave_up_reason(attempts: int, lost: str) -> str:
    """Why a job failed after losing its worker too many times."""
    return f"lost its worker {attempts} times; last: {lost}"


@dataclass(frozen=True)
class JobSpec:
    """One kind of job, as the shared machinery sees it. Only what a function uses need be
    given: a heartbeat needs the model and its lease columns, a sweep its settings and moves."""

    model: type[models.Model]
    # The object type of its audit events ("training_run"), also the start of their action.
    audit_as: str
    # Its statuses and columns, by the names its model has.
    running: str = "running"
    queued: str = "queued"
    owner_field: str = "lease_owner"
    heartbeat_field: str = "heartbeat_at"
    attempts_field: str = "attempts"
    message_field: str = "message_id"
    enqueued_field: str = "enqueued_at"
    # A kind retried on a schedule (webhook deliveries): when its next attempt is due.
    due_field: str = ""
    # Its settings, read at each sweep so an operator's (or a test's) change applies.
    stale_after_s: Callable[[], float] | None = None
    resend_after_s: Callable[[], float] = lambda: DEFAULT_RESEND_AFTER_SECONDS
    max_attempts: Callable[[], int] | None = None
    # Its broker side: the Dramatiq actor (looked up late: a tasks module imports services)
    # and the send that records the new message on the row, returning its id.
    actor: Callable[[], Any] | None = None
    enqueue: Callable[[Any], Any] | None = None
    # Its sweep: which rows hold a stale lease (default: running, heartbeat older than
    # stale_after_s), why such a job lost its worker, whether it may fail for that, whether a
    # cancel was asked for, and the app's moves.
    stale: Callable[[JobSpec, datetime], Q] | None = None
    lost: Callable[[Any], str] | None = None
    may_give_up: Callable[[Any], bool] = lambda row: True
    cancel_requested: Callable[[Any], bool] = lambda row: False
    requeue: Move | None = None
    fail: Move | None = None
    cancel: Move | None = None
    # What the sweep's report calls a requeue ("resent" for dataset builds), and how it
    # names a job (the report's ids are what each sweep has always returned).
    requeued_as: str = "requeued"
    report_id: Callable[[Any], Any] = str
    # The sweep's row lock: no_key lets a worker's heartbeat UPDATE wait for the decision
    # rather than fail; skip_locked passes over a job being written right now.
    lock: Mapping[str, bool] = field(default_factory=lambda: {"no_key": True})

    @property
    def rows(self) -> Any:
        """The model's manager (typed loosely: a spec serves any model)."""
        return self.model._default_manager

    def stale_leases(self, now: datetime) -> Q:
        if self.stale is not None:
            return self.stale(self, now)
        assert self.stale_after_s is not None, f"{self.audit_as}: no stale_after_s"
        stale_before = now - timedelta(seconds=self.stale_after_s())
        return Q(status=self.running, **{f"{self.heartbeat_field}__lt": stale_before})

    def why_lost(self, row: Any) -> str:
        if self.lost is not None:
            return self.lost(row)
        seen = f"{getattr(row, self.heartbeat_field):%Y-%m-%d %H:%M:%S}"
        return f"worker {getattr(row, self.owner_field)} stopped (last heartbeat {seen})"


# -- the worker's side ------------------------------------------------------------------------


def lease_renew(spec: JobSpec, *, pk: Any, owner: str, **fields: Any) -> bool:
    """Renew the heartbeat (and write `fields` with it) while `owner` still holds the lease;
    False when it does not: the sweep took the job back, or it ended."""
    alive = spec.rows.filter(pk=pk, status=spec.running, **{spec.owner_field: owner}).update(
        **{spec.heartbeat_field: timezone.now()}, **fields
    )
    return bool(alive)


class LeaseHeartbeat(threading.Thread):
    """Keeps a lease alive while the worker is busy in something long (loading a model, one
    long step, an evaluation). Once the lease is lost it stops and says so in `lost`; the
    worker checks that before writing anything that belongs to the job's new owner."""

    def __init__(self, spec: JobSpec, pk: Any, owner: str, every: float):
        super().__init__(daemon=True, name=f"heartbeat-{pk}")
        self.spec, self.pk, self.owner, self.every = spec, pk, owner, every
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                if not lease_renew(self.spec, pk=self.pk, owner=self.owner):
                    self.lost = True
                    return
        finally:
            # The thread's own connection: left open, it would outlive the worker's job.
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join()


# -- the sweep's side -------------------------------------------------------------------------


def stale_leases_sweep(spec: JobSpec, *, now: datetime) -> dict[str, list[Any]]:
    """Take back the jobs whose worker went silent: honour a cancel asked for while it was
    gone, fail the job once it lost MAX_ATTEMPTS workers (when the spec lets it), else requeue
    it. Reports `{action: [ids]}` with the spec's action names, in the order they are listed."""
    done: dict[str, list[Any]] = {spec.requeued_as: [], "failed": []}
    if spec.cancel is not None:
        done["cancelled"] = []
    stale = spec.stale_leases(now)
    max_attempts = spec.max_attempts() if spec.max_attempts is not None else None
    for pk in list(spec.rows.filter(stale).values_list("pk", flat=True)):
        with transaction.atomic():
            # Re-read under a row lock: a worker that just came back to life keeps its job (its
            # heartbeat won), and its next heartbeat waits for this decision, then finds its
            # lease gone.
            row = spec.rows.select_for_update(**spec.lock).filter(stale, pk=pk).first()
            if row is None:
                continue
            lost = spec.why_lost(row)
            move: Move | None
            if spec.cancel is not None and spec.cancel_requested(row):
                action, move = "cancelled", spec.cancel
            elif (
                max_attempts is not None
                and spec.may_give_up(row)
                and getattr(row, spec.attempts_field) >= max_attempts
            ):
                action, move = "failed", spec.fail
            else:
                action, move = spec.requeued_as, spec.requeue
            assert move is not None, f"{spec.audit_as}: no move for {action}"
            if move(row, lost, now):
                done[action].append(spec.report_id(row.pk))
    return done


def lost_messages_resend(
    spec: JobSpec,
    *,
    now: datetime,
    waiting: Q | None = None,
    why: str | None = None,
    looked_for: str = "lost messages",
    logged: Callable[[Any, str, str], None] | None = None,
) -> list[str]:
    """Send again the message of each job that waits longer than it should (by default: queued,
    sent more than resend_after_s ago) and that the broker no longer holds: Redis was restarted
    empty, or flushed, or the send failed after the commit.

    A broker that cannot list its messages gets the message again after every resend_after_s;
    that is safe because a delivery claims its job in the database and a second one does
    nothing. `why`, `looked_for` and `logged` let a kind word its audit event and log lines."""
    from config.dramatiq import broker_message_ids

    if waiting is None:
        sent_before = now - timedelta(seconds=spec.resend_after_s())
        # enqueued_at is empty for jobs run without the broker (`manage.py train`): not ours
        # to send.
        waiting = Q(status=spec.queued, **{f"{spec.enqueued_field}__lt": sent_before})
    rows = list(spec.rows.filter(waiting).values_list("pk", spec.message_field))
    if not rows:
        return []
    import redis

    assert spec.actor is not None and spec.enqueue is not None, f"{spec.audit_as}: no broker"
    actor = spec.actor()
    try:
        held = broker_message_ids(actor.broker, actor.queue_name)
    except redis.RedisError as exc:
        logger.warning("broker unreachable (%s): %s are looked for next time", exc, looked_for)
        return []
    resent = []
    for pk, message_id in rows:
        if held is not None and message_id in held:
            continue  # waiting its turn behind other work
        with transaction.atomic():
            # Locked: a worker may be claiming it right now; then it no longer waits.
            row = (
                spec.rows.select_for_update()
                .filter(waiting, pk=pk, **{spec.message_field: message_id})
                .first()
            )
            if row is None:
                continue
            new_id = spec.enqueue(pk)
            reason = why or (
                "the broker no longer holds it" if held is not None else "the broker cannot say"
            )
            audit_append(
                actor=None,
                action=f"{spec.audit_as}.message_resent",
                object_type=spec.audit_as,
                object_id=pk,
                payload={"lost_message": message_id, "message": new_id, "why": reason},
            )
        if logged is not None:
            logged(row, message_id, reason)
        else:
            logger.warning(
                "%s %s: message %s lost (%s); sent again", spec.audit_as, pk, message_id, reason
            )
        resent.append(str(pk))
    return resent


def jobs_due(spec: JobSpec, *, now: datetime) -> list[str]:
    """The queued jobs of a scheduled kind whose next attempt is due (`due_field` passed)."""
    due = spec.rows.filter(status=spec.queued, **{f"{spec.due_field}__lte": now})
    return [str(pk) for pk in due.values_list("pk", flat=True)]


def due_jobs_resend(spec: JobSpec, *, now: datetime) -> list[str]:
    """Send again every due job of a kind that records no message id (so the broker cannot be
    asked): a due job's message was lost, or it is about to be delivered, and then the claim in
    the database makes the second send a no-op."""
    assert spec.enqueue is not None, f"{spec.audit_as}: no send"
    due = jobs_due(spec, now=now)
    for pk in due:
        spec.enqueue(pk)
    return due
