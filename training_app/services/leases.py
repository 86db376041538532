"""Job leases shared by training runs and evaluations: who a worker is, the heartbeat thread
that keeps a lease alive during long work, and the resend of queued jobs whose broker message
was lost."""

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from config.dramatiq import broker_message_ids
from core.audit import audit_append
from training_app.models import TrainingRun
from training_app.services.runs import _conf

logger = logging.getLogger(__name__)


def worker_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class LeaseHeartbeat(threading.Thread):
    """Keeps a lease (a training run's or an evaluation's) alive while the worker is busy in
    something long (loading, one long step, evaluation)."""

    def __init__(
        self, run_id: Any, owner: str, every: float, model: type[models.Model] = TrainingRun
    ):
        super().__init__(daemon=True, name=f"heartbeat-{run_id}")
        self.run_id, self.owner, self.every, self.model = run_id, owner, every, model
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                alive = self.model.objects.filter(  # type: ignore[attr-defined]
                    pk=self.run_id, status="running", lease_owner=self.owner
                ).update(heartbeat_at=timezone.now())
                if not alive:
                    self.lost = True
                    return
        finally:
            connection.close()


def lost_messages_resend(
    *,
    model: type[models.Model],
    actor: Any,
    object_type: str,
    enqueue: Callable[[Any], str],
    now: Any,
) -> list[str]:
    """Send again the message of each queued job (a training run or an evaluation) that was
    sent more than RESEND_AFTER_SECONDS ago and that the broker no longer holds: Redis was
    restarted empty, or flushed, or the send failed after the commit.

    A broker that cannot list its messages gets the message again after every
    RESEND_AFTER_SECONDS; that is safe because a delivery claims its job in the database and a
    second one does nothing."""
    sent_before = now - timedelta(seconds=_conf("RESEND_AFTER_SECONDS"))
    # enqueued_at is empty for jobs run without the broker (`manage.py train`): not ours to send.
    waiting = list(
        model.objects.filter(  # type: ignore[attr-defined]
            status="queued", enqueued_at__lt=sent_before
        ).values_list("pk", "message_id")
    )
    if not waiting:
        return []
    import redis

    try:
        held = broker_message_ids(actor.broker, actor.queue_name)
    except redis.RedisError as exc:
        logger.warning("broker unreachable (%s): lost messages are looked for next time", exc)
        return []
    resent = []
    for pk, message_id in waiting:
        if held is not None and message_id in held:
            continue  # waiting its turn behind other work
        with transaction.atomic():
            # Locked: a worker may be claiming it right now; then it is no longer queued.
            row = (
                model.objects.select_for_update()  # type: ignore[attr-defined]
                .filter(pk=pk, status="queued", message_id=message_id)
                .first()
            )
            if row is None:
                continue
            new_id = enqueue(pk)
            why = "the broker no longer holds it" if held is not None else "the broker cannot say"
            audit_append(
                actor=None,
                action=f"{object_type}.message_resent",
                object_type=object_type,
                object_id=pk,
                payload={"lost_message": message_id, "message": new_id, "why": why},
            )
        logger.warning("%s %s: message %s lost (%s); sent again", object_type, pk, message_id, why)
        resent.append(str(pk))
    return resent
