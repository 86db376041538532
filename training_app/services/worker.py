"""The worker's side of a training run: claim it, train it with hooks that write progress to
its row (and check the lease and a cancel before every step), record the model version.
torch is imported only inside `training_run_execute`."""

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.audit import audit_append
from core.jobs import LeaseHeartbeat, lease_renew
from core.lifecycle import transition
from datasets_app.selectors import dataset_version_rows
from training_app.errors import LeaseLost, TransitionRefused
from training_app.models import ModelVersion, TrainingRun
from training_app.services.base_models import base_model_verify
from training_app.services.runs import TRAINING_RUN_JOB, _conf, _end_run, _run_transition
from training_app.services.versions import (
    model_version_loadable_adapter,
    model_version_store_adapter,
    model_version_transition,
)
from training_app.training.environment import git_commit, library_versions

logger = logging.getLogger(__name__)


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
        try:
            transition(
                run,
                TrainingRun.Status.RUNNING,
                refused=lambda frm, to: TransitionRefused(
                    f"Training run {run.pk} cannot go from {frm} to {to}."
                ),
                changed=lambda frm: _ClaimLost(),
                fields={
                    "lease_owner": owner,
                    "heartbeat_at": now,
                    "attempts": F("attempts") + 1,
                    "started_at": run.started_at or now,
                },
                refresh=True,
                audit=audit_append,
                audit_as="training_run",
                payload=lambda run: {"owner": owner, "attempt": run.attempts},
            )
        except _ClaimLost:
            return None  # another delivery won the compare-and-set
    return run


class _ClaimLost(Exception):
    """Another delivery of the same message claimed the run between our read and our update."""


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
    from training_app.training.trainer import TrainingHooks

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
            alive = lease_renew(
                TRAINING_RUN_JOB,
                pk=run.pk,
                owner=owner,
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
            per_epoch = p.steps_per_epoch or (p.total_steps // epochs) or 1
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
    from training_app.training.data import write_jsonl

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
    from training_app.training.trainer import TrainingArguments, TrainingCancelled, TrainingFailed
    from training_app.training.trainer import run as train

    heartbeat = LeaseHeartbeat(TRAINING_RUN_JOB, run.pk, owner, _conf("HEARTBEAT_SECONDS"))
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
            # Stop (with a checkpoint) before Dramatiq's own limit ends the actor.
            time_limit_seconds=max(60.0, _conf("TIME_LIMIT_MS") / 1000 - 120),
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
        heartbeat.stop()
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
    from training_app.training.environment import device_info

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
            "world_size",
            "peak_memory_mib",
        )
    }
    environment = {
        "libraries": library_versions(),
        **device_info(result.device),
        "dtype": result.dtype,
        "world_size": result.world_size,
        "devices": result.devices,
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
            config={**version.config, "trainer": _trainer_config(result)},
            trained_at=timezone.now(),
        )
        evaluation = None
        if evaluate != "skip":
            from training_app.services.evaluations import evaluation_request

            evaluation = evaluation_request(
                user=None, version=version, enqueue=evaluate == "enqueue"
            )
    if evaluation is not None and evaluate == "inline":
        from training_app.services.evaluations import evaluation_execute

        evaluation_execute(evaluation_id=evaluation.pk, owner=owner)
    return run


def _trainer_config(result: Any) -> dict[str, Any]:
    """What ran, as the trainer reports it (not what the settings asked for): its devices,
    processes, precision and the batching it really used."""
    packed = result.packing != "none"
    batching = f"packed ({result.packing})" if packed else "length-grouped, padded"
    return {
        "device": result.device,
        "devices": result.devices,
        "world_size": result.world_size,
        "backend": result.backend,
        "launcher": result.launcher,
        "precision": result.precision,
        "quantization": result.quantization,
        "batching": batching,
        "packing": result.packing,
        "global_batch_size": result.global_batch_size,
        "per_rank_batch_size": result.per_rank_batch_size,
        "per_rank_accumulation": result.per_rank_accumulation,
        "lr_schedule": "linear warmup then linear decay",
        "optimizer": "AdamW",
        "loss": "assistant tokens only, weighted by example weight",
        "keeps": "adapter with the best eval loss",
    }
