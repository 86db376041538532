"""Dramatiq actors: take ids, call a service. The lease in the database decides who works, so a
message delivered twice does nothing the second time."""

import dramatiq
from django.conf import settings
from dramatiq.middleware import CurrentMessage

from config.dramatiq import TRAINING_QUEUE

from . import services
from .services.channel_try import channel_try_execute, try_timeout_seconds


def _owner() -> str:
    message = CurrentMessage.get_current_message()
    suffix = f":{message.message_id}" if message is not None else ""
    return services.worker_owner() + suffix


@dramatiq.actor(
    queue_name=TRAINING_QUEUE,
    # Set on purpose (Dramatiq's 10-minute default would kill a run): it bounds a runaway job,
    # and TimeLimit cannot interrupt C/CUDA code anyway; liveness is the database heartbeat's.
    time_limit=settings.SIGNOFF_TRAINING["TIME_LIMIT_MS"],
    # Retries are the sweeper's job (it knows whether the run is alive); a failure is recorded
    # on the run before the exception reaches Dramatiq. A redelivery (the broker thought this
    # worker dead while one long step held it) finds the run leased and does nothing.
    max_retries=0,
)
def train_model_version(run_id: str) -> None:
    services.training_run_execute(run_id=run_id, owner=_owner())


@dramatiq.actor(
    queue_name=TRAINING_QUEUE,
    time_limit=settings.SIGNOFF_TRAINING["TIME_LIMIT_MS"],
    max_retries=0,
)
def evaluate_model_version(evaluation_id: str) -> None:
    services.evaluation_execute(evaluation_id=evaluation_id, owner=_owner())


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=60_000)
def sweep_training_runs() -> None:
    from .services.evaluations import evaluations_sweep

    services.training_runs_sweep()
    evaluations_sweep()


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=120_000)
def deliver_webhook(delivery_id: str) -> None:
    """One attempt; the service schedules the next one (with backoff) itself."""
    from .services.webhooks import webhook_deliver

    webhook_deliver(delivery_id=delivery_id)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=120_000)
def check_drift() -> None:
    from .services.monitoring import drift_check_all

    drift_check_all()


@dramatiq.actor(
    queue_name="default",
    # Failures are recorded on the job (the page shows them); a retry would ask the model again.
    max_retries=0,
    # Longer than the job's own wait on the model server, so the service records the outcome.
    time_limit=int((try_timeout_seconds() + 120) * 1000),
)
def answer_channel_try(job_id: str) -> None:
    channel_try_execute(job_id=job_id)
