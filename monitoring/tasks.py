"""Dramatiq actors of monitoring: take ids, call a service (actor names unchanged from when
they lived in training_app, so queued messages still find them)."""

import dramatiq


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=120_000)
def deliver_webhook(delivery_id: str) -> None:
    """One attempt; the service schedules the next one (with backoff) itself."""
    from monitoring.services.webhooks import webhook_deliver

    webhook_deliver(delivery_id=delivery_id)


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=120_000)
def check_drift() -> None:
    from monitoring.services.drift import drift_check_all

    drift_check_all()
