"""`manage.py serve_models --workers 2`: two model server processes on one port answer two
questions at once, with the same answers as the one-process server, and stop together."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError

from config.dramatiq import free_port
from serving.client import ServerRefused, call
from serving.server import ModelCache, default_workers, make_server, make_wsgi_app
from training_app.training.runtime import available_cores

from ..e2e.test_story_browser import database_url, http_ok
from ..waiting import REQUEST_SECONDS, cpu_ticks, file_sizes, join_threads, wait_for
from .test_run_demo_shutdown import in_sessions, proc_stat
from .test_serving_merged import PROMPTS, approved_version

ROOT = Path(settings.BASE_DIR)


def ready_workers(log: Path) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if line.startswith("model worker ")]


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_answer_at_once_as_one_process_would_and_stop_together(
    personas, make_dataset_version, tiny_base_model, tiny_model_dir, training_dirs, tmp_path,
):  # fmt: skip
    version = approved_version(personas, make_dataset_version, tmp_path, tiny_model_dir)
    port = free_port()
    log = tmp_path / "serve_models.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "SIGNOFF_VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "serve_models", "--workers", "2",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # Both workers ready (torch imported), so the second question finds one free.
        wait_for(
            lambda: len(ready_workers(log)) == 2 and http_ok(f"{url}/health"),
            what="two model workers ready",
            progress=lambda: (file_sizes([log]), cpu_ticks(in_sessions({server.pid}))),
            describe=lambda: log.read_text(errors="replace")[-2000:],
            each=lambda: server.poll() is None or pytest.fail(log.read_text(errors="replace")),
        )
        workers = {int(line.split()[2]) for line in ready_workers(log)}
        assert len(workers) == 2 and server.pid not in workers

        body = {"version_id": str(version.pk), "messages": PROMPTS[0], "max_new_tokens": 12}
        answers: list[dict] = []

        def ask() -> None:
            answers.append(call(url, "/generate", body, timeout=REQUEST_SECONDS))

        # A worker takes a connection only when it is free, and the first answer loads the
        # model (seconds): the two questions asked together land on the two workers.
        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        join_threads(
            threads,
            what="two answers",
            progress=lambda: (len(answers), cpu_ticks(in_sessions({server.pid}))),
        )
        assert {answer["server_pid"] for answer in answers} == workers

        single = make_server("127.0.0.1", 0)
        threading.Thread(target=single.serve_forever, daemon=True).start()
        try:
            one = call(
                f"http://127.0.0.1:{single.server_address[1]}", "/generate", body,
                timeout=REQUEST_SECONDS,
            )  # fmt: skip
        finally:
            single.shutdown()
            single.server_close()
        assert [answer["text"] for answer in answers] == [one["text"]] * 2
        # Each worker computes with its share of the cores: more threads would spin against
        # the other worker's (two workers of two threads on 2 cores answered at 0.8x of one).
        share = max(1, available_cores() // 2)
        for _ in range(4):
            assert call(url, "/health", None, timeout=REQUEST_SECONDS)["torch_threads"] == share
        assert all(answer["version_id"] == str(version.pk) for answer in answers)

        # Refusals are the same as the one-process server's.
        with pytest.raises(ServerRefused) as refused:
            call(url, "/generate", body, timeout=REQUEST_SECONDS, token="not-the-token")
        assert refused.value.status == 401
    finally:
        server.send_signal(signal.SIGTERM)
        wait_for(
            lambda: server.poll() is not None and not in_sessions({server.pid}),
            what="serve_models and its workers stopped",
            describe=lambda: str([proc_stat(pid) for pid in in_sessions({server.pid})]),
        )
    assert server.returncode == 0, log.read_text(errors="replace")


def wsgi(app, method: str, path: str, body: bytes = b"", authorization: str = "", length=None):
    """(status, JSON body) of one request to a WSGI application."""
    statuses: list[int] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)) if length is None else length,
        "wsgi.input": io.BytesIO(body),
        "HTTP_AUTHORIZATION": authorization,
    }
    chunks = app(environ, lambda status, headers: statuses.append(int(status.split()[0])))
    return statuses[0], json.loads(b"".join(chunks))


def test_the_worker_application_refuses_what_the_threaded_server_refuses():
    app = make_wsgi_app(ModelCache())
    assert wsgi(app, "GET", "/generate")[0] == 405
    assert wsgi(app, "POST", "/elsewhere")[0] == 404
    status, payload = wsgi(app, "POST", "/generate", b"{}", authorization="Bearer wrong")
    assert status == 401 and "web process only" in payload["detail"]
    status, payload = wsgi(app, "POST", "/generate", b"{}", length="many")
    assert status == 400 and "Content-Length" in payload["detail"]
    status, payload = wsgi(app, "GET", "/health")
    assert status == 200 and payload["pid"] == os.getpid() and payload["loaded"] == []


def test_a_worker_count_that_is_not_a_number_is_refused(settings):
    settings.SIGNOFF_GOVERNANCE = {**settings.SIGNOFF_GOVERNANCE, "SERVING_WORKERS": "many"}
    with pytest.raises(ImproperlyConfigured, match="SIGNOFF_SERVING_WORKERS='many'"):
        default_workers()
    settings.SIGNOFF_GOVERNANCE = {**settings.SIGNOFF_GOVERNANCE, "SERVING_WORKERS": "auto"}
    assert 1 <= default_workers() <= 2
    with pytest.raises(CommandError, match="at least 1"):
        call_command("serve_models", "--workers", "0")
