"""`make demo` keeps its ready banner in view: runserver logs failed requests only, and
maintenance prints only when it did something (tests/training_app/test_maintenance.py)."""

import os
import subprocess
import sys
from pathlib import Path

from demo.management.commands.run_demo import Command

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import logging, django
django.setup()
server = logging.getLogger("django.server")
print(server.isEnabledFor(logging.INFO), server.isEnabledFor(logging.WARNING))
"""


def _server_levels(tmp_path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SIGNOFF_SERVER_LOG_LEVEL"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.dev", SIGNOFF_VAR_DIR=str(tmp_path), **extra)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_it_gives_the_demos_web_server_a_quiet_request_log():
    children = Command()._children(ROOT / "manage.py", "127.0.0.1:8000", {"REDIS_URL": "x"})
    _say, command, env = next(children)
    assert "runserver" in command
    assert env["SIGNOFF_SERVER_LOG_LEVEL"] == "WARNING" and env["REDIS_URL"] == "x"


def test_the_dev_settings_log_only_failed_requests_when_asked(tmp_path):
    assert _server_levels(tmp_path, SIGNOFF_SERVER_LOG_LEVEL="WARNING") == "False True"
    # Plain `runserver` keeps Django's request log.
    assert _server_levels(tmp_path) == "True True"
