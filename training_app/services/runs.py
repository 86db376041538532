"""Training runs: create, lease, execute, cancel, sweep.

A run is claimed through a database lease (owner + heartbeat) so that a duplicate Dramatiq
delivery does nothing; a sweeper takes back runs whose heartbeat went stale and fails them after
a configured number of lost attempts, and sends again the message of a queued run that the
broker lost (Redis restarted empty): the database, not Redis, is the source of truth. torch is
imported only inside `training_run_execute`.
"""

import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from config.dramatiq import broker_message_ids, send_after_commit
from datasets_app.models import DatasetVersion
from datasets_app.selectors import dataset_version_rows
from reviews.models import Role
from reviews.roles import has_role
from reviews.services import audit_append

from ..errors import InvalidTrainingRequest, LeaseLost, TrainingForbidden, TransitionRefused
from ..models import BaseModel, ModelVersion, TrainingRun
from ..training.environment import git_commit, library_versions
from ..training.hyperparameters import HyperparameterError
from ..training.hyperparameters import validate as validate_hyperparameters
from .base_models import base_model_default, base_model_verify
from .versions import (
    model_version_loadable_adapter,
    model_version_store_adapter,
    model_version_transition,
)

logger = logging.getLogger(__name__)

LAUNCH_ROLES = (Role.ML_ENGINEER, Role.ADMIN)
# A parent must have trained successfully and not have been turned down.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PARENT_STATUSES = {
    ModelVersion.Status.TRAINED,
    ModelVersion.Status.EVALUATED,
    ModelVersion.Status.AWAITING_SIGNOFF,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.DEPLOYED,
}


# Until config/settings/base.py names it: how long a queued job's message may be missing from
# the broker before the sweep sends it again (it covers the moment between commit and send).
RESEND_AFTER_SECONDS = 60


def _conf(key: str) -> Any:
    if key == "RESEND_AFTER_SECONDS":
        return settings.SIGNOFF_TRAINING.get(key, RESEND_AFTER_SECONDS)
    return settings.SIGNOFF_TRAINING[key]


def can_launch_training(user: AbstractBaseUser) -> bool:
    return has_role(user, *LAUNCH_ROLES)


def worker_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _run_transition(
    *,
    run: TrainingRun,
    to: str,
    actor: AbstractBaseUser | None,
    owner: str | None = None,
    payload: dict[str, Any] | None = None,
    **fields: Any,
) -> TrainingRun:
    """Compare-and-set of the run's status (and, for a worker, its lease), with an audit event.
    Runs inside the caller's transaction."""
    frm = run.status
    if to not in TrainingRun.TRANSITIONS[TrainingRun.Status(frm)]:
        raise TransitionRefused(f"Training run {run.pk} cannot go from {frm} to {to}.")
    query = TrainingRun.objects.filter(pk=run.pk, status=frm)
    if owner is not None:
        query = query.filter(lease_owner=owner)
    if query.update(status=to, **fields) != 1:
        if owner is not None:
            raise LeaseLost(f"Training run {run.pk} is no longer held by {owner}.")
        raise TransitionRefused(f"Training run {run.pk} changed under us (was {frm}).")
    run.refresh_from_db()
    audit_append(
        actor=actor,
        action=f"training_run.{to}",
        object_type="training_run",
        object_id=run.pk,
        payload={"from": frm, "to": to, **(payload or {})},
    )
    return run


# -- create and cancel ------------------------------------------------------------------------


def training_run_check(
    *,
    user: AbstractBaseUser,
    dataset_version: DatasetVersion | None,
    base_model: BaseModel | None = None,
    parent_version: ModelVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    name: str = "",
) -> tuple[BaseModel, dict[str, Any], str]:
    """Every check of `training_run_create`, with no side effect: (base model, complete
    hyperparameters, clean name). Flows that must do slow work first (building a dataset) call
    it before, so a bad request leaves nothing behind. dataset_version=None skips its check."""
    if not can_launch_training(user):
        raise TrainingForbidden("Only ML engineers and admins launch training runs.")
    if dataset_version is not None and dataset_version.status != DatasetVersion.Status.READY:
        raise InvalidTrainingRequest(
            f"Dataset version {dataset_version.pk} is {dataset_version.status}, not ready.",
            field="dataset_version",
        )
    if parent_version is not None:
        if parent_version.status not in PARENT_STATUSES:
            raise InvalidTrainingRequest(
                f"Model version {parent_version.name} is {parent_version.status}; "
                "only a trained version can be continued.",
                field="parent_version",
            )
        if base_model is not None and base_model.pk != parent_version.base_model_id:
            raise InvalidTrainingRequest(
                "The base model must be the parent version's base model.", field="base_model"
            )
        base_model = parent_version.base_model
    if base_model is None:
        base_model = base_model_default()
        if base_model is None:
            raise InvalidTrainingRequest(
                "No base model is registered: run `manage.py prepare_base_model`.",
                field="base_model",
            )
    try:
        params = validate_hyperparameters(hyperparameters, architecture=base_model.architecture)
    except HyperparameterError as exc:
        raise InvalidTrainingRequest(str(exc), field=f"hyperparameters.{exc.field}") from exc
    if parent_version is not None:
        # The adapter's shape is the parent's: its LoRA settings win over the request's.
        parent_params = parent_version.config.get("hyperparameters", {})
        for key in ("lora_r", "lora_alpha", "target_modules"):
            if key in parent_params:
                params[key] = parent_params[key]
    name = name.strip()
    if len(name) > 100:
        raise InvalidTrainingRequest("At most 100 characters.", field="name")
    if name and not VERSION_NAME.fullmatch(name):
        # Names end up in file names, headers and URLs.
        raise InvalidTrainingRequest(
            "Letters, digits, '.', '_' and '-' only (it names files and URLs).", field="name"
        )
    if name and ModelVersion.objects.filter(name=name).exists():
        raise InvalidTrainingRequest(f"A model version named {name} exists.", field="name")
    return base_model, params, name


def training_run_create(
    *,
    user: AbstractBaseUser,
    dataset_version: DatasetVersion,
    base_model: BaseModel | None = None,
    parent_version: ModelVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    name: str = "",
    enqueue: bool = True,
) -> TrainingRun:
    """Validate everything up front, record the run and its model version (status training),
    and queue it for a worker once the transaction commits."""
    base_model, params, name = training_run_check(
        user=user,
        dataset_version=dataset_version,
        base_model=base_model,
        parent_version=parent_version,
        hyperparameters=hyperparameters,
        name=name,
    )
    with transaction.atomic():
        run = TrainingRun.objects.create(
            dataset_version=dataset_version,
            base_model=base_model,
            parent_version=parent_version,
            hyperparameters=params,
            created_by=user,
            progress={"step": 0, "total_steps": None},
        )
        run.work_dir = str(Path(_conf("RUNS_DIR")) / str(run.pk))
        run.save(update_fields=["work_dir"])
        version = ModelVersion.objects.create(
            name=name or f"{slugify(dataset_version.name)[:60] or 'model'}-{run.pk.hex[:8]}",
            run=run,
            parent=parent_version,
            base_model=base_model,
            base_model_ref=base_model.reference,
            dataset_version=dataset_version,
            created_by=user,
            config={
                "hyperparameters": params,
                "base_model": base_model.reference,
                "dataset_version": {
                    "id": dataset_version.pk,
                    "name": dataset_version.name,
                    "manifest_hash": dataset_version.manifest_hash,
                },
                "parent_version": str(parent_version.pk) if parent_version else None,
            },
        )
        audit_append(
            actor=user,
            action="training_run.create",
            object_type="training_run",
            object_id=run.pk,
            payload={
                "model_version": str(version.pk),
                "model_version_name": version.name,
                "dataset_version": dataset_version.pk,
                "manifest_hash": dataset_version.manifest_hash,
                "base_model": base_model.name,
                "parent_version": str(parent_version.pk) if parent_version else None,
                "hyperparameters": params,
            },
        )
        if enqueue:
            _enqueue_training(run.pk)
    return run


def _enqueue_training(run_id: Any) -> str:
    """Send the run's message once the caller's transaction commits, and record its id on the
    row in that transaction, so the sweep can tell a lost message from one still waiting."""
    from ..tasks import train_model_version

    message = send_after_commit(train_model_version, str(run_id))
    TrainingRun.objects.filter(pk=run_id).update(
        message_id=message.message_id, enqueued_at=timezone.now()
    )
    return message.message_id


def training_run_cancel(*, user: AbstractBaseUser, run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one at its worker's next step."""
    if not can_launch_training(user):
        raise TrainingForbidden("Only ML engineers and admins cancel training runs.")
    with transaction.atomic():
        # Locked: the worker may be claiming or finishing it right now.
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status == TrainingRun.Status.QUEUED:
            _end_run(run=run, to=TrainingRun.Status.CANCELLED, actor=user, reason="cancelled")
        elif run.status == TrainingRun.Status.RUNNING:
            if run.cancel_requested_at is None:
                TrainingRun.objects.filter(pk=run.pk).update(cancel_requested_at=timezone.now())
                audit_append(
                    actor=user,
                    action="training_run.cancel_requested",
                    object_type="training_run",
                    object_id=run.pk,
                    payload={},
                )
            run.refresh_from_db()
        else:
            raise TransitionRefused(f"Training run {run.pk} is {run.status}; nothing to cancel.")
    return run


def _end_run(
    *,
    run: TrainingRun,
    to: str,
    actor: AbstractBaseUser | None,
    reason: str,
    owner: str | None = None,
    **fields: Any,
) -> TrainingRun:
    """A terminal run transition and its version's (cancelled / failed) together."""
    run = _run_transition(
        run=run,
        to=to,
        actor=actor,
        owner=owner,
        payload={"reason": reason},
        finished_at=timezone.now(),
        failure_reason=reason if to == TrainingRun.Status.FAILED else "",
        **fields,
    )
    version = ModelVersion.objects.get(run=run)
    model_version_transition(
        version=version,
        to=ModelVersion.Status.FAILED if to == TrainingRun.Status.FAILED else to,
        actor=actor,
        payload={"run": str(run.pk), "reason": reason},
    )
    return run


# -- the worker's side -------------------------------------------------------------------------


def training_run_claim(*, run_id: Any, owner: str) -> TrainingRun | None:
    """Take the lease on a queued run. None means someone else has it or it is over: a
    duplicate delivery, or a message for a run cancelled while queued."""
    with transaction.atomic():
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is None:
            logger.warning("training run %s does not exist; message dropped", run_id)
            return None
        if run.status != TrainingRun.Status.QUEUED:
            logger.info(
                "training run %s is %s (lease: %s); this delivery to %s does nothing",
                run_id,
                run.status,
                run.lease_owner or "none",
                owner,
            )
            return None
        now = timezone.now()
        claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.RUNNING,
            lease_owner=owner,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            started_at=run.started_at or now,
        )
        if claimed != 1:
            return None  # another delivery won the compare-and-set
        run.refresh_from_db()
        audit_append(
            actor=None,
            action="training_run.running",
            object_type="training_run",
            object_id=run.pk,
            payload={"from": "queued", "to": "running", "owner": owner, "attempt": run.attempts},
        )
    return run


class LeaseHeartbeat(threading.Thread):
    """Keeps a lease (a training run's or an evaluation's) alive while the worker is busy in
    something long (loading, one long step, evaluation)."""

    def __init__(
        self, run_id: Any, owner: str, every: float, model: type[models.Model] = TrainingRun
    ):
        super().__init__(daemon=True, name=f"heartbeat-{run_id}")
        self.run_id, self.owner, self.every, self.model = run_id, owner, every, model
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                alive = self.model.objects.filter(  # type: ignore[attr-defined]
                    pk=self.run_id, status="running", lease_owner=self.owner
                ).update(heartbeat_at=timezone.now())
                if not alive:
                    self.lost = True
                    return
        finally:
            connection.close()


def _downsample(points: list[list[float]], limit: int = 500) -> list[list[float]]:
    if len(points) <= limit:
        return points
    stride = -(-len(points) // limit)
    kept = points[::stride]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def _make_hooks(
    run: TrainingRun,
    owner: str,
    heartbeat: LeaseHeartbeat,
    on_progress: Callable[[Any], None] | None,
):
    from ..training.trainer import TrainingHooks

    params = run.hyperparameters
    checkpoint_every = params.get("checkpoint_every_steps") or 0
    epochs = params.get("num_epochs") or 1

    class DatabaseHooks(TrainingHooks):
        """Progress, curves and log lines into the run's row; cancel and lease checks.

        `progress["timeline"]` keeps this attempt's wall-clock times (claimed, trainer started,
        model loaded, first step started and done) for bench/bench_orchestration.py."""

        def __init__(self) -> None:
            self.last_write = 0.0
            self.timeline: dict[str, Any] = {"attempt": run.attempts, "claimed_at": time.time()}
            self.progress: dict[str, Any] = {**run.progress, "timeline": self.timeline}
            self.losses: list[list[float]] = list(run.loss_history)
            self.evals: list[dict[str, Any]] = list(run.eval_history)
            self.lines: deque[str] = deque(run.log_tail.splitlines(), maxlen=_conf("LOG_LINES"))

        def _write(self, **extra: Any) -> None:
            alive = TrainingRun.objects.filter(
                pk=run.pk, status=TrainingRun.Status.RUNNING, lease_owner=owner
            ).update(
                heartbeat_at=timezone.now(),
                progress=self.progress,
                loss_history=_downsample(self.losses),
                eval_history=self.evals,
                log_tail="\n".join(self.lines),
                **extra,
            )
            self.last_write = time.monotonic()
            if not alive:
                raise LeaseLost(f"Training run {run.pk} is no longer held by {owner}.")

        def mark(self, event: str, **extra: Any) -> bool:
            if event in self.timeline:
                return False
            self.timeline[event] = time.time()
            self.timeline.update(extra)
            return True

        def on_model_loaded(self, *, seconds: float) -> None:
            self.mark("model_loaded_at", model_load_s=round(seconds, 3))

        def should_stop(self) -> bool:
            # The trainer asks before every step: the first question is the first step starting
            # (written at once, so the run's page shows it has begun during a long first step).
            if self.mark("first_step_started_at"):
                self._write()
            # One indexed read per step: cancel takes effect before the next step.
            row = (
                TrainingRun.objects.filter(pk=run.pk)
                .values("status", "lease_owner", "cancel_requested_at")
                .first()
            )
            if (
                heartbeat.lost
                or row is None
                or row["lease_owner"] != owner
                or (row["status"] != TrainingRun.Status.RUNNING)
            ):
                raise LeaseLost(f"Training run {run.pk} is no longer held by {owner}.")
            return row["cancel_requested_at"] is not None

        def on_progress(self, p: Any) -> None:
            self.progress = {
                "step": p.step,
                "total_steps": p.total_steps,
                "epoch": p.epoch,
                "loss": round(p.loss, 5),
                "lr": p.learning_rate,
                "tokens_per_s": round(p.tokens_per_second, 1),
                "eta_s": round(p.eta_seconds, 1),
                "elapsed_s": round(p.elapsed_seconds, 1),
                "timeline": self.timeline,
            }
            self.mark("first_step_at")
            # After a resume, steps past the checkpoint are trained again: drop their old points.
            while self.losses and self.losses[-1][0] >= p.step:
                self.losses.pop()
            self.losses.append([p.step, round(p.loss, 5)])
            if on_progress is not None:
                on_progress(p)
            due = time.monotonic() - self.last_write >= _conf("PROGRESS_SECONDS")
            # A checkpoint may follow this step: the write checks the lease first, so a worker
            # that lost its run (stalled past the sweep, then woke up) never writes into the
            # run's folder after the new owner started.
            per_epoch = (p.total_steps // epochs) or 1
            checkpoint_next = (checkpoint_every and p.step % checkpoint_every == 0) or (
                p.step % per_epoch == 0
            )
            if due or checkpoint_next or p.step == p.total_steps or p.step == 1:
                self._write()

        def on_eval(self, *, step: int, epoch: int, eval_loss: float) -> None:
            self.evals = [e for e in self.evals if e["step"] < step]
            self.evals.append({"step": step, "epoch": epoch, "eval_loss": round(eval_loss, 5)})
            self._write()

        def on_log(self, line: str) -> None:
            stamped = f"{timezone.now():%H:%M:%S} {line}"
            self.lines.append(stamped)
            logger.info("run %s: %s", run.pk, line)

        def flush(self) -> None:
            self._write()

    return DatabaseHooks()


def _export_split(run: TrainingRun, split: str, path: Path) -> int:
    from ..training.data import write_jsonl

    return write_jsonl(path, dataset_version_rows(version=run.dataset_version, split=split))


EvaluateMode = Literal["enqueue", "inline", "skip"]


def training_run_execute(
    *,
    run_id: Any,
    owner: str,
    on_progress: Callable[[Any], None] | None = None,
    evaluate: EvaluateMode = "enqueue",
) -> TrainingRun | None:
    """Claim the run, train it, record the model version. The worker's and the CLI's path.

    Returns None when this caller did not get the run (duplicate delivery)."""
    run = training_run_claim(run_id=run_id, owner=owner)
    if run is None:
        return None
    from ..training.trainer import TrainingArguments, TrainingCancelled, TrainingFailed
    from ..training.trainer import run as train

    heartbeat = LeaseHeartbeat(run.pk, owner, _conf("HEARTBEAT_SECONDS"))
    heartbeat.start()
    hooks = _make_hooks(run, owner, heartbeat, on_progress)
    try:
        work = Path(run.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        base_model_verify(base_model=run.base_model)
        train_rows = _export_split(run, "train", work / "train.jsonl")
        eval_rows = _export_split(run, "eval", work / "eval.jsonl")
        hooks.on_log(
            f"attempt {run.attempts} by {owner}: {train_rows} train / {eval_rows} eval rows"
        )
        parent_adapter = None
        if run.parent_version_id:
            parent_adapter = str(
                model_version_loadable_adapter(
                    version=run.parent_version, into=work / "parent-adapter"
                )
            )
        params = dict(run.hyperparameters)
        args = TrainingArguments(
            base_model_path=run.base_model.folder,
            train_file=str(work / "train.jsonl"),
            eval_file=str(work / "eval.jsonl") if eval_rows else None,
            output_dir=str(work / "output"),
            parent_adapter_path=parent_adapter,
            device=_conf("DEVICE"),
            **params,
        )
        hooks.mark("trainer_started_at")
        result = train(args, hooks)
    except TrainingCancelled:
        hooks.on_log("cancelled")
        _worker_end(run, owner, hooks, TrainingRun.Status.CANCELLED, "cancelled by request")
        return TrainingRun.objects.get(pk=run.pk)
    except TrainingFailed as exc:
        hooks.on_log(f"failed: {exc}")
        _worker_end(run, owner, hooks, TrainingRun.Status.FAILED, str(exc))
        return TrainingRun.objects.get(pk=run.pk)
    except LeaseLost:
        logger.warning("run %s: lease lost by %s; leaving it to its new owner", run.pk, owner)
        return None
    except Exception as exc:
        hooks.on_log(f"failed: {type(exc).__name__}: {exc}")
        _worker_end(run, owner, hooks, TrainingRun.Status.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
    try:
        return training_run_succeed(
            run=run, owner=owner, result=result, hooks=hooks, evaluate=evaluate
        )
    except LeaseLost:
        logger.warning("run %s: lease lost by %s before it was recorded", run.pk, owner)
        return None


def _worker_end(run: TrainingRun, owner: str, hooks: Any, to: str, reason: str) -> None:
    try:
        hooks.flush()
    except LeaseLost:
        return
    with transaction.atomic():
        _end_run(run=run, to=to, actor=None, reason=reason, owner=owner)


def training_run_succeed(
    *, run: TrainingRun, owner: str, result: Any, hooks: Any, evaluate: EvaluateMode
) -> TrainingRun:
    from ..training.environment import device_info

    version = ModelVersion.objects.select_related("base_model").get(run=run)
    # Lease check before the files: a worker that lost the run must not replace the adapter
    # the new owner stores (its manifest would no longer match).
    hooks.flush()
    artifact_dir, manifest = model_version_store_adapter(
        version=version, adapter_dir=result.adapter_dir
    )
    details = result.to_dict()
    metrics = {
        key: details[key]
        for key in (
            "steps",
            "total_steps",
            "epochs_done",
            "final_train_loss",
            "eval_history",
            "best_eval_loss",
            "best_step",
            "train_tokens",
            "tokens_per_second",
            "seconds",
            "resumed_from_step",
            "train_examples",
            "eval_examples",
            "trainable_parameters",
        )
    }
    environment = {
        "libraries": library_versions(),
        **device_info(result.device),
        "dtype": result.dtype,
        "git_commit": git_commit(Path(settings.BASE_DIR)),
        "worker": owner,
    }
    hooks.on_log(f"model version {version.name}: adapter in {artifact_dir}")
    hooks.flush()
    with transaction.atomic():
        run = _run_transition(
            run=run,
            to=TrainingRun.Status.SUCCEEDED,
            actor=None,
            owner=owner,
            payload={"model_version": str(version.pk)},
            finished_at=timezone.now(),
        )
        model_version_transition(
            version=version,
            to=ModelVersion.Status.TRAINED,
            actor=None,
            payload={"manifest": manifest, "best_eval_loss": metrics["best_eval_loss"]},
            artifact_dir=artifact_dir,
            manifest=manifest,
            metrics=metrics,
            environment=environment,
            config={**version.config, "trainer": _trainer_config(run)},
            trained_at=timezone.now(),
        )
        evaluation = None
        if evaluate != "skip":
            from .evaluations import evaluation_request

            evaluation = evaluation_request(
                user=None, version=version, enqueue=evaluate == "enqueue"
            )
    if evaluation is not None and evaluate == "inline":
        from .evaluations import evaluation_execute

        evaluation_execute(evaluation_id=evaluation.pk, owner=owner)
    return run


def _trainer_config(run: TrainingRun) -> dict[str, Any]:
    return {
        "device": _conf("DEVICE"),
        "lr_schedule": "linear warmup then linear decay",
        "optimizer": "AdamW",
        "loss": "assistant tokens only, weighted by example weight",
        "batching": "length-grouped",
        "keeps": "adapter with the best eval loss",
    }


def training_runs_sweep(*, now: Any = None) -> dict[str, list[str]]:
    """Take back runs whose worker stopped heartbeating: re-queue them, or fail them after
    MAX_ATTEMPTS lost attempts; honour a cancel asked for while the worker was gone. Then send
    again the message of every queued run that the broker no longer holds."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=_conf("STALE_AFTER_SECONDS"))
    done: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": [], "resent": []}
    stale = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale_before
    )
    for run in stale:
        with transaction.atomic():
            # Re-read under a row lock: a worker that just came back to life keeps its run, and
            # its next heartbeat waits for this decision (then finds its lease gone).
            run = (
                TrainingRun.objects.select_for_update(no_key=True)
                .filter(pk=run.pk, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale_before)
                .first()
            )
            if run is None:
                continue
            seen = f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S}"
            lost = f"worker {run.lease_owner} stopped (last heartbeat {seen})"
            if run.cancel_requested_at is not None:
                _end_run(
                    run=run,
                    to=TrainingRun.Status.CANCELLED,
                    actor=None,
                    reason=lost,
                    owner=run.lease_owner,
                )
                done["cancelled"].append(str(run.pk))
            elif run.attempts >= _conf("MAX_ATTEMPTS"):
                reason = f"lost its worker {run.attempts} times; last: {lost}"
                _end_run(
                    run=run,
                    to=TrainingRun.Status.FAILED,
                    actor=None,
                    reason=reason,
                    owner=run.lease_owner,
                )
                done["failed"].append(str(run.pk))
            else:
                _run_transition(
                    run=run,
                    to=TrainingRun.Status.QUEUED,
                    actor=None,
                    owner=run.lease_owner,
                    payload={"reason": lost, "attempts": run.attempts},
                    lease_owner="",
                    heartbeat_at=None,
                )
                _enqueue_training(run.pk)
                done["requeued"].append(str(run.pk))
    from ..tasks import train_model_version

    done["resent"] = lost_messages_resend(
        model=TrainingRun,
        actor=train_model_version,
        object_type="training_run",
        enqueue=_enqueue_training,
        now=now,
    )
    return done


def lost_messages_resend(
    *,
    model: type[models.Model],
    actor: Any,
    object_type: str,
    enqueue: Callable[[Any], str],
    now: Any,
) -> list[str]:
    """Send again the message of each queued job (a training run or an evaluation) that was
    sent more than RESEND_AFTER_SECONDS ago and that the broker no longer holds: Redis was
    restarted empty, or flushed, or the send failed after the commit.

    A broker that cannot list its messages gets the message again after every
    RESEND_AFTER_SECONDS; that is safe because a delivery claims its job in the database and a
    second one does nothing."""
    sent_before = now - timedelta(seconds=_conf("RESEND_AFTER_SECONDS"))
    # enqueued_at is empty for jobs run without the broker (`manage.py train`): not ours to send.
    waiting = list(
        model.objects.filter(  # type: ignore[attr-defined]
            status="queued", enqueued_at__lt=sent_before
        ).values_list("pk", "message_id")
    )
    if not waiting:
        return []
    import redis

    try:
        held = broker_message_ids(actor.broker, actor.queue_name)
    except redis.RedisError as exc:
        logger.warning("broker unreachable (%s): lost messages are looked for next time", exc)
        return []
    resent = []
    for pk, message_id in waiting:
        if held is not None and message_id in held:
            continue  # waiting its turn behind other work
        with transaction.atomic():
            # Locked: a worker may be claiming it right now; then it is no longer queued.
            row = (
                model.objects.select_for_update()  # type: ignore[attr-defined]
                .filter(pk=pk, status="queued", message_id=message_id)
                .first()
            )
            if row is None:
                continue
            new_id = enqueue(pk)
            why = "the broker no longer holds it" if held is not None else "the broker cannot say"
            audit_append(
                actor=None,
                action=f"{object_type}.message_resent",
                object_type=object_type,
                object_id=pk,
                payload={"lost_message": message_id, "message": new_id, "why": why},
            )
        logger.warning("%s %s: message %s lost (%s); sent again", object_type, pk, message_id, why)
        resent.append(str(pk))
    return resent
