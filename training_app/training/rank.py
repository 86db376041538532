"""One rank of a multi-process run: what torchrun starts N times (see `launch.py`).

    python -m torch.distributed.run --standalone --nproc-per-node N \
        -m training_app.training.rank --run-dir DIR [--control SOCKET]

Every rank runs `trainer.run` on the arguments in DIR/args.json. Rank 0 reports to the launcher
over the Unix socket SOCKET, one JSON object a line (progress, eval, checkpoint, log), and before
every step asks "stop?" and waits for the launcher's answer, so a cancel takes effect before the
next step exactly as in one process. Without --control (torchrun started by hand) rank 0 prints
its progress and stops when the file DIR/stop appears. Rank 0 writes DIR/result.json when the run
succeeds. Each rank writes its output to DIR/logs/rank-<r>.log, its pid to DIR/rank-<r>.pid and,
when it fails, the reason to DIR/rank-<r>.error.json.

Exit status: 0 for success and for a cancel (every rank stops at the same step), 1 for a
failure; torchrun then ends the other ranks and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .arguments import Progress, TrainingArguments, TrainingFailed, TrainingHooks


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EventHooks(TrainingHooks):
    """Rank 0's hooks: events to the launcher, which replays them to the caller's hooks."""

    def __init__(self, control: str):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.connect(control)
        self.answers = self.socket.makefile("rb")

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": time.time(), **fields}) + "\n"
        self.socket.sendall(line.encode())

    def should_stop(self) -> bool:
        self.emit("should_stop")
        answer = self.answers.readline()
        if not answer:
            raise TrainingFailed("the launcher is gone (its socket closed)")
        return answer.strip() == b"1"

    def on_progress(self, progress: Progress) -> None:
        self.emit("progress", **asdict(progress))
        print(f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f}", flush=True)

    def on_eval(self, *, step: int, epoch: int, eval_loss: float) -> None:
        self.emit("eval", step=step, epoch=epoch, eval_loss=eval_loss)

    def on_checkpoint(self, *, step: int, path: str) -> None:
        self.emit("checkpoint", step=step, path=path)

    def on_model_loaded(self, *, seconds: float) -> None:
        self.emit("model_loaded", seconds=seconds)

    def on_log(self, line: str) -> None:
        self.emit("log", line=line)
        print(line, flush=True)


class PrintHooks(TrainingHooks):
    """The other ranks' hooks (their log lines go to their own log file), and rank 0's when
    torchrun was started by hand: progress printed, cancel by creating DIR/stop."""

    def __init__(self, stop_file: Path | None = None):
        self.stop_file = stop_file

    def should_stop(self) -> bool:
        return self.stop_file is not None and self.stop_file.exists()

    def on_progress(self, progress: Progress) -> None:
        print(f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f}", flush=True)

    def on_log(self, line: str) -> None:
        print(line, flush=True)


def _redirect_output(log: Path) -> None:
    """stdout and stderr (Python's and C's: NCCL, gloo) to this rank's log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="The launch folder (args.json in it).")
    parser.add_argument("--control", help="The launcher's Unix socket (rank 0 reports to it).")
    options = parser.parse_args(argv)
    run_dir = Path(options.run_dir)
    rank = int(os.environ.get("RANK", "0"))
    _redirect_output(run_dir / "logs" / f"rank-{rank}.log")
    (run_dir / f"rank-{rank}.pid").write_text(str(os.getpid()))
    print(f"rank {rank} of {os.environ.get('WORLD_SIZE', '1')}, pid {os.getpid()}", flush=True)

    from .arguments import TrainingCancelled
    from .trainer import run

    args = TrainingArguments(**json.loads((run_dir / "args.json").read_text()))
    hooks: EventHooks | PrintHooks
    if rank == 0 and options.control:
        hooks = EventHooks(options.control)
    else:
        hooks = PrintHooks(run_dir / "stop" if rank == 0 else None)
    try:
        result = run(args, hooks)
    except TrainingCancelled:
        if isinstance(hooks, EventHooks):
            hooks.emit("cancelled")
        print("cancelled", flush=True)
        return 0
    except TrainingFailed as exc:
        _record_failure(run_dir, rank, "TrainingFailed", str(exc), hooks)
        return 1
    except BaseException as exc:
        traceback.print_exc()
        _record_failure(run_dir, rank, type(exc).__name__, f"{type(exc).__name__}: {exc}", hooks)
        return 1
    if rank == 0:
        result.launcher = "torchrun"
        write_atomically(run_dir / "result.json", json.dumps(result.to_dict()))
    return 0


def _record_failure(run_dir: Path, rank: int, kind: str, message: str, hooks: Any) -> None:
    print(f"failed: {message}", flush=True)
    error = {"rank": rank, "kind": kind, "message": message, "time": time.time()}
    write_atomically(run_dir / f"rank-{rank}.error.json", json.dumps(error))
    if isinstance(hooks, EventHooks) and kind == "TrainingFailed":
        # Failures the trainer decides (NaN loss, time limit) are the same on every rank.
        hooks.emit("failed", message=message)


if __name__ == "__main__":
    sys.exit(main())
