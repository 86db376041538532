"""Dramatiq actors: take ids, call a service. The lease in the database decides who works, so a
message delivered twice does nothing the second time."""

import dramatiq
from django.conf import settings
from dramatiq.middleware import CurrentMessage

from config.dramatiq import TRAINING_QUEUE
from training_app import services


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
    from training_app.services.evaluations import evaluations_sweep

    services.training_runs_sweep()
    evaluations_sweep()
