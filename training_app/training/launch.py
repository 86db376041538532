"""Start a run as N processes under torchrun and follow it from the caller's process.

`launch(args, hooks)` writes the arguments to a launch folder, starts

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \
        -m training_app.training.rank --run-dir <output_dir>/launch --control <socket>

(a local rendezvous on a free port; one rank per GPU with NCCL, or N CPU processes with gloo),
and until it exits replays rank 0's events (`rank.EventHooks`, JSON lines over a Unix socket) to
`hooks` in this thread: progress, evals, checkpoints, log lines. Before every step rank 0 asks
"stop?" and waits: the question becomes one `hooks.should_stop()` call here, and rank 0
broadcasts the answer, so every rank stops before the same step, as in one process. An exception
from `hooks` (a lost lease, say) ends the processes and propagates.

The end maps to the trainer's own outcomes: result.json -> TrainingResult; a cancel ->
TrainingCancelled; a failure the trainer decided (NaN loss, time limit) -> TrainingFailed with
its message; a rank that died (killed, out of memory, an error) -> TrainingFailed naming the
rank, how it ended and the tail of its log (<output_dir>/launch/logs/rank-<r>.log).

The caller needs no torch.distributed of its own; this module imports torch only to count the
machine's devices.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .arguments import (
    Progress,
    TrainingArguments,
    TrainingCancelled,
    TrainingFailed,
    TrainingHooks,
    TrainingResult,
)
from .runtime import available_cores

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTRY = "training_app.training.rank"
LOG_TAIL_LINES = 30


def launch_dir(args: TrainingArguments) -> Path:
    return Path(args.output_dir) / "launch"


def command(
    nproc: int, run_dir: Path, *, control: str | None = None, python: str | None = None
) -> list[str]:
    """The torchrun command line for `nproc` ranks on this machine."""
    line = [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",
        "--monitor-interval",
        "0.5",
        "-m",
        ENTRY,
        "--run-dir",
        str(run_dir),
    ]
    return [*line, "--control", control] if control else line


def launch(
    args: TrainingArguments,
    hooks: TrainingHooks | None = None,
    *,
    nproc: int | None = None,
    poll_seconds: float = 0.5,
    env: dict[str, str] | None = None,
) -> TrainingResult:
    """Train with `nproc` (default `args.world_size`) processes; see the module docstring."""
    from .runtime import check_machine

    hooks = hooks or TrainingHooks()
    nproc = nproc or args.world_size
    # Refuse what the machine cannot do here, with the trainer's message, before any process.
    kind = _device_kind(args.device)
    check_machine(world_size=nproc, quantization=args.quantization, device=kind)
    run_dir = launch_dir(args)
    _fresh(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps({**asdict(args), "world_size": nproc}))
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), child_env.get("PYTHONPATH", "")) if p
    )
    if kind == "cpu":
        # torchrun would set 1 (and warn); the trainer shares the cores out itself.
        child_env.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    # A short path: Unix socket paths are limited to ~100 bytes, output folders may be longer.
    control_dir = tempfile.mkdtemp(prefix="signoff-launch-")
    control = os.path.join(control_dir, "control.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(control)
    server.listen(1)
    hooks.on_log(f"starting {nproc} processes with torchrun ({kind}); logs in {run_dir / 'logs'}")
    launcher_log = (run_dir / "logs" / "torchrun.log").open("wb")
    process = subprocess.Popen(
        command(nproc, run_dir, control=control),
        cwd=PROJECT_ROOT,
        env=child_env,
        stdout=launcher_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: ending it ends every rank
    )
    outcome: dict[str, Any] = {}
    try:
        _follow(process, server, hooks, outcome, poll_seconds)
    except BaseException:
        _terminate(process)
        raise
    finally:
        launcher_log.close()
        server.close()
        shutil.rmtree(control_dir, ignore_errors=True)
    return _outcome(process.returncode, run_dir, outcome)


def _follow(
    process: subprocess.Popen,
    server: socket.socket,
    hooks: TrainingHooks,
    outcome: dict[str, Any],
    poll_seconds: float,
) -> None:
    """Relay rank 0's events until torchrun exits and rank 0's socket is drained."""
    conn: socket.socket | None = None
    pending = b""
    eof = False
    exited_at: float | None = None
    while True:
        exited = process.poll() is not None
        if exited and exited_at is None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > 10:
            return  # a socket left open by a process that outlived torchrun
        watch = [conn] if conn is not None else ([] if eof else [server])
        ready, _, _ = select.select(watch, [], [], 0.05 if exited else poll_seconds)
        if server in ready:
            conn, _ = server.accept()
        elif conn is not None and conn in ready:
            data = conn.recv(1 << 16)
            if not data:  # rank 0 exited (or closed): everything it sent has been read
                conn.close()
                conn, eof = None, True
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                answer = _dispatch(json.loads(line), hooks, outcome)
                if answer is not None and conn is not None:
                    conn.sendall(b"1\n" if answer else b"0\n")
        elif exited:
            # Nothing more to read: rank 0 never connected, or its socket is closed.
            if conn is not None:
                conn.close()
            return


def _dispatch(event: dict[str, Any], hooks: TrainingHooks, outcome: dict[str, Any]) -> bool | None:
    kind = event["event"]
    if kind == "should_stop":
        return bool(hooks.should_stop())
    if kind == "progress":
        names = {f.name for f in fields(Progress)}
        hooks.on_progress(Progress(**{k: v for k, v in event.items() if k in names}))
    elif kind == "eval":
        hooks.on_eval(step=event["step"], epoch=event["epoch"], eval_loss=event["eval_loss"])
    elif kind == "checkpoint":
        hooks.on_checkpoint(step=event["step"], path=event["path"])
    elif kind == "model_loaded":
        hooks.on_model_loaded(seconds=event["seconds"])
    elif kind == "log":
        hooks.on_log(event["line"])
    elif kind in ("cancelled", "failed"):
        outcome[kind] = event
    return None


def _outcome(returncode: int, run_dir: Path, outcome: dict[str, Any]) -> TrainingResult:
    result_file = run_dir / "result.json"
    if returncode == 0 and result_file.is_file():
        values = json.loads(result_file.read_text())
        names = {f.name for f in fields(TrainingResult)}
        return TrainingResult(**{k: v for k, v in values.items() if k in names})
    if returncode == 0 and "cancelled" in outcome:
        raise TrainingCancelled()
    if "failed" in outcome:
        raise TrainingFailed(outcome["failed"]["message"])
    raise TrainingFailed(describe_failure(returncode, run_dir))


# torchrun's failure summary: "rank      : 1 (local_rank: 1)" then "exitcode  : -9 (pid: 123)".
_SUMMARY = re.compile(r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-?\d+)", re.S)


def describe_failure(returncode: int, run_dir: Path) -> str:
    """Which rank ended the run, how, and the end of its log."""
    summary = _tail(run_dir / "logs" / "torchrun.log", 200)
    exits = {int(rank): int(code) for rank, code in _SUMMARY.findall(summary)}
    errors = []
    for path in run_dir.glob("rank-*.error.json"):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    # A rank killed by a signal left no error file and is the cause; the others' errors
    # ("connection closed by peer") follow from it. Otherwise the first error written.
    killed = sorted(rank for rank, code in exits.items() if code < 0)
    if killed:
        rank = killed[0]
        signum = -exits[rank]
        try:
            how = f"was killed by {signal.Signals(signum).name}"
        except ValueError:
            how = f"was killed by signal {signum}"
        if signum == signal.SIGKILL:
            how += " (out of memory, or killed from outside)"
        message = f"rank {rank} {how}"
    elif errors:
        first = min(errors, key=lambda e: e.get("time", 0))
        rank = int(first["rank"])
        message = f"rank {rank} failed: {first['message']}"
    elif exits:
        rank = min(exits)
        message = f"rank {rank} exited with code {exits[rank]}"
    else:
        rank = None
        message = f"torchrun exited with code {returncode}"
    if rank is not None:
        log = _tail(run_dir / "logs" / f"rank-{rank}.log", LOG_TAIL_LINES)
        return f"{message}; the end of its log ({run_dir / 'logs'}):\n{log}"
    return f"{message}; the end of its log:\n{_tail(run_dir / 'logs' / 'torchrun.log', 30)}"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _terminate(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to torchrun and every rank (one process group), SIGKILL after `grace`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _fresh(run_dir: Path) -> None:
    """A launch folder for this attempt: the previous attempt's results must not be read as
    this one's (the previous folder is kept beside it, as launch.previous, for its logs)."""
    if (run_dir / "logs").is_dir():
        previous = run_dir.parent / f"{run_dir.name}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        shutil.move(str(run_dir), previous)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)


def _device_kind(name: str) -> str:
    if name != "auto":
        return "cuda" if name.startswith("cuda") else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
