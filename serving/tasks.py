"""Dramatiq actors of serving: take ids, call a service."""

import dramatiq

from serving.services.channel_try import channel_try_execute, try_timeout_seconds


@dramatiq.actor(
    queue_name="default",
    # Failures are recorded on the job (the page shows them); a retry would ask the model again.
    max_retries=0,
    # Longer than the job's own wait on the model server, so the service records the outcome.
    time_limit=int((try_timeout_seconds() + 120) * 1000),
)
def answer_channel_try(job_id: str) -> None:
    channel_try_execute(job_id=job_id)
