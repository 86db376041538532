"""The lease settings that training runs and evaluations share (`SIGNOFF_TRAINING`), read at
each use so a change applies at the next sweep. The machinery itself (worker identity,
heartbeat, stale-lease sweep, lost-message resend) is `core.jobs`; each kind's `JobSpec` lives
with its moves (`runs.TRAINING_RUN_JOB`, `evaluations.EVALUATION_JOB`)."""

from typing import Any

from django.conf import settings

from core.jobs import DEFAULT_RESEND_AFTER_SECONDS, worker_owner

__all__ = [
    "heartbeat_seconds",
    "max_attempts",
    "resend_after_seconds",
    "stale_after_seconds",
    "training_conf",
    "worker_owner",
]


def training_conf(key: str) -> Any:
    if key == "RESEND_AFTER_SECONDS":
        return settings.SIGNOFF_TRAINING.get(key, DEFAULT_RESEND_AFTER_SECONDS)
    return settings.SIGNOFF_TRAINING[key]


def stale_after_seconds() -> float:
    """A running job whose heartbeat is older than this lost its worker."""
    return training_conf("STALE_AFTER_SECONDS")


def resend_after_seconds() -> float:
    """A queued job's message missing from the broker this long is sent again."""
    return training_conf("RESEND_AFTER_SECONDS")


def max_attempts() -> int:
    """Workers a job may lose before it fails instead of going back to the queue."""
    return training_conf("MAX_ATTEMPTS")


def heartbeat_seconds() -> float:
    return training_conf("HEARTBEAT_SECONDS")
