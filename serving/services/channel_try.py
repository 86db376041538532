"""The channel page's "Try it": a question answered in the background by the same service as
`POST /api/channels/{name}/generate/`, so the browser neither waits on the model nor loses an
answer it stopped waiting for."""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from config.dramatiq import send_after_commit
from core.errors import ApplicationError
from core.jobs import DEFAULT_RESEND_AFTER_SECONDS, JobSpec, lost_messages_resend
from core.lifecycle import transition
from core.permissions import can
from governance.models import Channel
from serving.models import ChannelTry
from serving.services.generate import channel_generate, channel_generate_check
from training_app.errors import TransitionRefused

logger = logging.getLogger(__name__)

# The model server answers one prompt at a time, and a busy 2-core CPU took 85 s for one: a
# job waits far longer than a browser would, so a slow answer is kept rather than thrown away.
TRY_TIMEOUT_SECONDS = 900.0


def try_timeout_seconds() -> float:
    return float(settings.SIGNOFF_GOVERNANCE.get("TRY_TIMEOUT_SECONDS", TRY_TIMEOUT_SECONDS))


def _resend_after_seconds() -> float:
    # The setting training runs and evaluations use too: one broker, one notion of "lost".
    conf: dict[str, Any] = settings.SIGNOFF_TRAINING
    return conf.get("RESEND_AFTER_SECONDS", DEFAULT_RESEND_AFTER_SECONDS)


class _TryTaken(Exception):
    """Another delivery moved the job first: this one's compare-and-set lost."""


def _try_transition(job: ChannelTry, to: str, where: Any = None, **fields: Any) -> bool:
    try:
        transition(
            job,
            to,
            refused=lambda frm, to: TransitionRefused(
                f"Try {job.pk} cannot go from {frm} to {to}."
            ),
            changed=lambda frm: _TryTaken(),
            where=where,
            fields=fields,
            refresh=True,
        )
    except _TryTaken:
        return False
    return True


def channel_try_transition(*, job: ChannelTry, to: str, **fields: Any) -> bool:
    """Compare-and-set of the job's status (`core.lifecycle.transition`, against
    `ChannelTry.TRANSITIONS`); False when another delivery got there first."""
    return _try_transition(job, to, **fields)


@transaction.atomic
def channel_try_create(*, user: AbstractBaseUser, channel: Channel, prompt: Any) -> ChannelTry:
    """Queue a question for the channel's live version. Refusals (role, empty prompt, nothing
    live) are raised here, before anything is queued."""
    version = channel_generate_check(user=user, channel=channel, prompt=prompt)
    job = ChannelTry.objects.create(channel=channel, version=version, user=user, question=prompt)
    job.message_id = _enqueue_try(job.pk)
    return job


def _enqueue_try(job_id: Any) -> str:
    """Send the job's message once the caller's transaction commits, and record its id and
    when it was sent on the row in that transaction (the sweep tells a lost message by them)."""
    from serving.tasks import answer_channel_try

    message = send_after_commit(answer_channel_try, str(job_id))
    ChannelTry.objects.filter(pk=job_id).update(
        message_id=message.message_id, enqueued_at=timezone.now()
    )
    return message.message_id


def _try_actor() -> Any:
    from serving.tasks import answer_channel_try

    return answer_channel_try


# A "Try it" job has no lease: a redelivered message takes over a job left running longer than
# any answer takes. What the sweep needs is its broker side.
CHANNEL_TRY_JOB = JobSpec(
    model=ChannelTry,
    audit_as="channel_try",
    resend_after_s=_resend_after_seconds,
    actor=_try_actor,
    enqueue=_enqueue_try,
)


def channel_tries_sweep(*, now: datetime | None = None) -> dict[str, list[str]]:
    """For `run_maintenance`: send again the message of each queued job whose message was lost
    (queued longer than SIGNOFF_TRAINING["RESEND_AFTER_SECONDS"], no longer in the broker),
    and of each running job whose worker died (running longer than the job's timeout): the
    actor takes such a job over. Idempotent: a job that is done, or that another delivery
    claimed, makes the extra message a no-op."""
    now = now or timezone.now()
    resent = lost_messages_resend(CHANNEL_TRY_JOB, now=now)
    return {"resent": resent, "taken back": _dead_workers_resend(now)}


def _dead_workers_resend(now: datetime) -> list[str]:
    stale = now - timedelta(seconds=try_timeout_seconds() + 60)
    sent_before = now - timedelta(seconds=CHANNEL_TRY_JOB.resend_after_s())
    dead = Q(status=ChannelTry.Status.RUNNING, started_at__lt=stale) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=sent_before)
    )

    def logged(row: ChannelTry, message_id: str, why: str) -> None:
        logger.warning("channel try %s: worker silent since %s; sent again", row.pk, row.started_at)

    return lost_messages_resend(
        CHANNEL_TRY_JOB,
        now=now,
        waiting=dead,
        why="its worker went silent past the job's timeout",
        looked_for="dead tries",
        logged=logged,
    )


def _external_id(job: ChannelTry) -> str:
    # One output per job however many times its message is delivered (the ingest keeps the
    # first output stored under a (source, external_id) pair).
    return f"{job.channel.name}-try-{job.pk.hex}"


def channel_try_execute(*, job_id: Any) -> ChannelTry | None:
    """Answer one queued question and record the answer as an output of the live version
    (routed into review). A second delivery of a finished job does nothing; one of a job left
    running longer than any answer takes (its worker died) takes it over."""
    stale = timezone.now() - timedelta(seconds=try_timeout_seconds() + 60)
    job = ChannelTry.objects.select_related("channel", "user").filter(pk=job_id).first()
    if job is None:
        logger.info("channel try %s is gone: nothing to do", job_id)
        return None
    takeover = job.status == ChannelTry.Status.RUNNING and (
        job.started_at is None or job.started_at < stale
    )
    if job.status != ChannelTry.Status.QUEUED and not takeover:
        logger.info("channel try %s is %s: nothing to do", job.pk, job.status)
        return job
    # A takeover is a compare-and-set on the start it read too: two redeliveries of a dead
    # worker's job race for it, and one wins.
    where = None
    if takeover:
        where = (
            {"started_at__isnull": True} if job.started_at is None else {"started_at__lt": stale}
        )
    if not _try_transition(job, ChannelTry.Status.RUNNING, where=where, started_at=timezone.now()):
        return job  # another delivery claimed it first
    try:
        output, answer = channel_generate(
            user=job.user,
            channel=job.channel,
            prompt=job.question,
            external_id=_external_id(job),
            timeout=try_timeout_seconds(),
        )
    except ApplicationError as exc:
        # Expected refusals (server down, nothing live any more, role taken away): the page
        # shows the reason; retrying would give the same answer.
        channel_try_transition(
            job=job, to=ChannelTry.Status.FAILED, error=exc.message, finished_at=timezone.now()
        )
        return job
    except Exception as exc:
        channel_try_transition(
            job=job,
            to=ChannelTry.Status.FAILED,
            error=f"Unexpected error: {exc.__class__.__name__}: {exc}",
            finished_at=timezone.now(),
        )
        raise
    channel_try_transition(
        job=job,
        to=ChannelTry.Status.DONE,
        output=output,
        version_id=answer["version_id"],
        finished_at=timezone.now(),
    )
    return job


def channel_tries_recent(*, user: AbstractBaseUser, channel: Channel) -> QuerySet[ChannelTry]:
    """The user's latest questions on the channel, so an answer the browser stopped waiting for
    can be found again."""
    return ChannelTry.objects.filter(channel=channel, user=user).select_related("output")[:10]


def channel_try_page_extras(*, user: AbstractBaseUser, channel: Channel) -> dict[str, Any]:
    """The channel page's "Try it" part: whether this user may ask, and their recent questions."""
    can_try = can(user, "channel.generate")
    return {
        "can_try": can_try,
        "tries": channel_tries_recent(user=user, channel=channel) if can_try else [],
    }
