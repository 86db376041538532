"""Dramatiq actors of the datasets app: take ids, call a service, nothing else."""

import dramatiq

from . import services


@dramatiq.actor(queue_name="datasets", max_retries=0, time_limit=30 * 60 * 1000)
def build_dataset_version(version_id: int) -> None:
    """Build a version recorded by `services.dataset_version_create`.

    Redelivery is harmless: `dataset_version_run` claims the build in the database and returns
    when someone else holds it. No retries: a failed build is recorded on the version (with
    why) and a person decides whether to build again.
    """
    services.dataset_version_run(version_id=version_id)
