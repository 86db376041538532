"""The trainer as N processes under torchrun (gloo on the CPU): the same optimisation as one
process, resume across world sizes, a dead rank, cancel. No database: these run once.

Each launch starts two Python processes that import torch, transformers and peft (~10 s on an
idle 2-core machine), so the runs are few and a few steps long."""

import os
import signal
import time
from pathlib import Path

import pytest

from training_app.training import data
from training_app.training.hyperparameters import HyperparameterError, validate
from training_app.training.launch import command, launch
from training_app.training.trainer import (
    TrainingCancelled,
    TrainingFailed,
    TrainingHooks,
    run,
)

from .conftest import demo_rows
from .test_trainer import adapter_tensors, args_for

pytestmark = pytest.mark.once

# Two ranks and one process add the same numbers in another order (gradients all-reduced,
# eval sums split by rank) and nothing else differs (no dropout): float32 rounding only.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")
    rows = demo_rows(20)
    train, evals = folder / "train.jsonl", folder / "eval.jsonl"
    data.write_jsonl(train, rows[:14])
    data.write_jsonl(evals, rows[14:])
    return train, evals


def dist_args(model_dir, splits, out, **overrides):
    # 14 examples, global batch 4: 4 steps, the last with 2 examples (one per rank); evaluated
    # at step 2 (every rank scores its share) and at the end.
    values = dict(num_epochs=1, checkpoint_every_steps=2, eval_every_steps=2, lora_dropout=0.0)
    values.update(overrides)
    return args_for(model_dir, splits, out, **values)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, splits, tmp_path_factory):
    """The reference: the whole run in this process."""
    out = tmp_path_factory.mktemp("one") / "out"
    return run(dist_args(tiny_model_dir, splits, out)), out


class Recorder(TrainingHooks):
    def __init__(self, stop_after: int | None = None):
        self.steps: list[int] = []
        self.evals: list[tuple[int, float]] = []
        self.checkpoints: list[int] = []
        self.stop_after = stop_after

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after

    def on_progress(self, p) -> None:
        self.steps.append(p.step)

    def on_eval(self, *, step, epoch, eval_loss) -> None:
        self.evals.append((step, eval_loss))

    def on_checkpoint(self, *, step, path) -> None:
        self.checkpoints.append(step)


def assert_same_adapter(a_dir: Path, b_dir: Path) -> None:
    a, b = adapter_tensors(a_dir), adapter_tensors(b_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert float((a[key] - b[key]).abs().max()) < TOLERANCE, key


def test_the_micro_batches_share_every_example_once_for_any_world_size():
    group = [list(range(0, 8)), list(range(8, 16)), list(range(16, 19))]
    for world in (1, 2, 3, 5):
        for merge in (True, False):
            plans = [
                data.rank_micro_batches(group, rank=r, world_size=world, batch_size=8, merge=merge)
                for r in range(world)
            ]
            seen = sorted(i for plan in plans for batch in plan for i in batch)
            assert seen == list(range(19))
            assert all(len(batch) <= 8 for plan in plans for batch in plan)
    # One process runs exactly the batches it always ran.
    assert data.rank_micro_batches(group, rank=0, world_size=1, batch_size=8, merge=True) == group
    # Two ranks, packed: each rank's halves are merged into passes of up to batch_size.
    two = data.rank_micro_batches(group, rank=0, world_size=2, batch_size=8, merge=True)
    assert [len(b) for b in two] == [8, 2]


def test_world_size_and_quantization_are_checked(tiny_model_dir, splits, tmp_path):
    assert validate({})["world_size"] == 1 and validate({})["quantization"] == "none"
    with pytest.raises(HyperparameterError, match="world_size"):
        validate({"world_size": 0})
    with pytest.raises(HyperparameterError, match="at most 2"):
        validate({"world_size": 3}, max_world_size=2)
    with pytest.raises(HyperparameterError, match="CUDA"):
        validate({"quantization": "4bit"}, cuda=False)
    with pytest.raises(HyperparameterError, match="quantization"):
        validate({"quantization": "8bit"})
    # The trainer refuses QLoRA on the CPU before it loads anything, in-process or launched.
    with pytest.raises(TrainingFailed, match=r"4bit .*needs a CUDA GPU"):
        run(dist_args(tiny_model_dir, splits, tmp_path / "q", quantization="4bit"))
    with pytest.raises(TrainingFailed, match=r"4bit .*needs a CUDA GPU"):
        launch(dist_args(tiny_model_dir, splits, tmp_path / "q2", quantization="4bit"))
    with pytest.raises(TrainingFailed, match="does not fit this machine"):
        run(dist_args(tiny_model_dir, splits, tmp_path / "w", world_size=64))


def test_the_launcher_command_is_torchrun(tmp_path):
    line = command(2, tmp_path, control="/tmp/x.sock")
    assert line[1:9] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
        "--monitor-interval",
    ]
    assert line[-6:] == [
        "-m",
        "training_app.training.rank",
        "--run-dir",
        str(tmp_path),
        "--control",
        "/tmp/x.sock",
    ]


def test_two_processes_train_to_the_loss_of_one(tiny_model_dir, splits, tmp_path, one_process):
    one, one_out = one_process
    hooks = Recorder()
    out = tmp_path / "two"
    two = run(dist_args(tiny_model_dir, splits, out, world_size=2), hooks)
    assert (two.world_size, two.backend, two.devices, two.launcher) == (
        2,
        "gloo",
        ["cpu", "cpu"],
        "torchrun",
    )
    assert (two.global_batch_size, two.per_rank_batch_size, two.per_rank_accumulation) == (4, 2, 1)
    assert two.steps == one.steps == 4
    assert two.train_tokens == one.train_tokens  # every example once, over both ranks
    # Rank 0 alone reports: each step once, the evals (step 2 and the end), the checkpoints.
    assert hooks.steps == [1, 2, 3, 4]
    assert [step for step, _ in hooks.evals] == [2, 4] and hooks.checkpoints == [2, 4]
    for (_, a), b in zip(hooks.evals, one.eval_history, strict=True):
        assert a == pytest.approx(b["eval_loss"], abs=TOLERANCE)
    assert two.best_eval_loss == pytest.approx(one.best_eval_loss, abs=TOLERANCE)
    for (_, a, _), (_, b, _) in zip(one.loss_history, two.loss_history, strict=True):
        assert a == pytest.approx(b, abs=TOLERANCE)
    assert_same_adapter(one_out / "adapter", out / "adapter")
    # Exactly one final adapter, complete, and nothing half-written beside it.
    assert sorted(p.name for p in out.iterdir() if "adapter" in p.name) == [
        "adapter",
        "best-adapter",
    ]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(out.glob(".*partial"))
    assert {p.name for p in (out / "launch" / "logs").iterdir()} >= {
        "rank-0.log",
        "rank-1.log",
        "torchrun.log",
    }
    # The checkpoint holds every rank's RNG state.
    import torch

    rng = torch.load(out / "checkpoints" / "step-000004" / "rng.pt", weights_only=True)
    assert rng["world_size"] == 2 and len(rng["ranks"]) == 2


class Crash(Exception):
    pass


def test_it_resumes_on_two_processes_from_a_one_process_checkpoint(
    tiny_model_dir, splits, tmp_path, one_process
):
    one, one_out = one_process

    class CrashAtStep3(TrainingHooks):
        def on_progress(self, p):
            if p.step == 3:
                raise Crash()

    out = tmp_path / "out"
    with pytest.raises(Crash):
        run(dist_args(tiny_model_dir, splits, out), CrashAtStep3())
    resumed = run(dist_args(tiny_model_dir, splits, out, world_size=2))
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    assert resumed.best_eval_loss == pytest.approx(one.best_eval_loss, abs=TOLERANCE)
    assert_same_adapter(one_out / "adapter", out / "adapter")


def test_cancel_stops_both_processes_and_one_process_resumes_their_checkpoint(
    tiny_model_dir, splits, tmp_path, one_process
):
    one, one_out = one_process
    out = tmp_path / "out"
    hooks = Recorder(stop_after=3)
    with pytest.raises(TrainingCancelled):
        run(dist_args(tiny_model_dir, splits, out, world_size=2), hooks)
    # Asked before step 4, after step 3: stopped there, as one process would.
    assert hooks.steps == [1, 2, 3]
    assert hooks.checkpoints == [2]
    pids = [int((out / "launch" / f"rank-{r}.pid").read_text()) for r in (0, 1)]
    assert not any(_alive(pid) for pid in pids)
    assert not (out / "adapter").exists()
    for rank in (0, 1):
        assert "cancelled" in (out / "launch" / "logs" / f"rank-{rank}.log").read_text()

    resumed = run(dist_args(tiny_model_dir, splits, out))  # one process, from the 2-rank checkpoint
    assert resumed.resumed_from_step == 2 and resumed.steps == 4 and resumed.world_size == 1
    assert resumed.best_eval_loss == pytest.approx(one.best_eval_loss, abs=TOLERANCE)
    assert_same_adapter(one_out / "adapter", out / "adapter")


def test_a_killed_rank_fails_the_run_with_its_log_and_no_adapter(tiny_model_dir, splits, tmp_path):
    out = tmp_path / "out"

    class KillRank1AtStep2(TrainingHooks):
        def on_progress(self, p):
            if p.step == 2:
                pid = int((out / "launch" / "rank-1.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                time.sleep(1.0)  # let it die before rank 0 is told to go on

    started = time.monotonic()
    with pytest.raises(TrainingFailed) as failure:
        run(dist_args(tiny_model_dir, splits, out, world_size=2), KillRank1AtStep2())
    message = str(failure.value)
    assert message.startswith("rank 1 was killed by SIGKILL"), message
    assert "rank 1 of 2" in message  # the tail of rank 1's log
    assert time.monotonic() - started < 90
    assert not (out / "adapter").exists()
    assert not list(out.glob(".adapter*"))
    pids = [int((out / "launch" / f"rank-{r}.pid").read_text()) for r in (0, 1)]
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status
