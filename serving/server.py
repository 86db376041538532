"""The model server: loads each version's base model + LoRA adapter once per process and
answers prompts over HTTP. Runs as `manage.py serve_models`, never inside the web process.

Loading checks the adapter files against the version's SHA-256 manifest and the base weights
against the registered hashes, and loads safetensors only (pickled weights are refused)."""

import hmac
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, connections

from core.errors import ApplicationError
from serving.client import serving_token

# Statuses whose adapters this server may answer with (rollback returns a version to approved).
SERVABLE = {"approved", "deployed"}
MAX_NEW_TOKENS = settings.SIGNOFF_GOVERNANCE["GENERATE_MAX_NEW_TOKENS"]

logger = logging.getLogger(__name__)


class ModelCache:
    """Generation is serialised (one forward pass at a time on a small CPU).

    Unmerged (the default): one base model per base, its versions' adapters loaded on it by
    name and switched per request: one copy of the base weights however many versions answer.
    Merged: each version's adapter is folded into its own copy of the base weights
    (`merge_and_unload`), so a request runs a plain model with no adapter layers, at the cost
    of a full copy of the weights per version; the `merged_limit` most recently used
    versions stay loaded."""

    def __init__(
        self, *, merge_adapters: bool = False, merged_limit: int = 2, processes: int = 1
    ) -> None:
        """`processes`: the model server processes on this machine (`serve_workers`); each
        computes with its share of the cores, as training processes do (`resolve_device`)."""
        self.lock = threading.Lock()
        self.processes = max(1, processes)
        self.bases: dict[int, dict[str, Any]] = {}
        self.merged: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.merge_adapters = merge_adapters
        self.merged_limit = max(1, merged_limit)
        self.scratch = Path(tempfile.mkdtemp(prefix="signoff-serving-"))
        self.loads = 0

    def loaded(self) -> list[str]:
        adapters = [a for entry in self.bases.values() for a in entry["adapters"]]
        return sorted([*adapters, *self.merged])

    def _verified_adapter(self, version: Any) -> Path:
        from training_app.services.versions import artifact_verify, model_version_loadable_adapter

        artifact_verify(version=version)
        return model_version_loadable_adapter(version=version, into=self.scratch / str(version.pk))

    def _load_merged(self, version: Any) -> dict[str, Any]:
        from peft import PeftModel

        from training_app.services.base_models import base_model_verify
        from training_app.training.trainer import load_base_model, load_tokenizer, resolve_device

        adapter = self._verified_adapter(version)
        base_model_verify(base_model=version.base_model)
        device, dtype = resolve_device("cpu", processes=self.processes)
        base = load_base_model(version.base_model.folder, device=device, dtype=dtype)
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        while len(self.merged) >= self.merged_limit:
            self.merged.popitem(last=False)  # the least recently used version
        entry = {
            "model": model.eval(),
            "tokenizer": load_tokenizer(version.base_model.folder),
            "device": device,
        }
        self.merged[str(version.pk)] = entry
        self.loads += 1
        logger.info("loaded %s merged (adapter %s)", version.name, adapter)
        return entry

    def _entry(self, version: Any) -> tuple[dict[str, Any], Any]:
        """(entry, model ready to answer as `version`)."""
        key = str(version.pk)
        if self.merge_adapters:
            entry = self.merged.get(key) or self._load_merged(version)
            self.merged.move_to_end(key)
            return entry, entry["model"]
        entry = self.bases.get(version.base_model_id)
        if entry is None or key not in entry["adapters"]:
            entry = self._load(version)
        entry["model"].set_adapter(key)
        return entry, entry["model"]

    def _load(self, version: Any) -> dict[str, Any]:
        from peft import PeftModel

        from training_app.services.base_models import base_model_verify
        from training_app.training.trainer import load_base_model, load_tokenizer, resolve_device

        adapter = self._verified_adapter(version)
        entry = self.bases.get(version.base_model_id)
        if entry is None:
            base_model_verify(base_model=version.base_model)
            device, dtype = resolve_device("cpu", processes=self.processes)
            base = load_base_model(version.base_model.folder, device=device, dtype=dtype)
            model = PeftModel.from_pretrained(base, str(adapter), adapter_name=str(version.pk))
            entry = {
                "model": model,
                "tokenizer": load_tokenizer(version.base_model.folder),
                "adapters": set(),
                "device": device,
            }
            self.bases[version.base_model_id] = entry
        else:
            entry["model"].load_adapter(str(adapter), adapter_name=str(version.pk))
        entry["model"].eval()
        entry["adapters"].add(str(version.pk))
        self.loads += 1
        logger.info("loaded %s (adapter %s)", version.name, adapter)
        return entry

    def generate(
        self, *, version: Any, messages: list[dict[str, str]], max_new_tokens: int
    ) -> dict[str, Any]:
        import torch

        from training_app.services.versions import manifest_digest
        from training_app.training.data import prompt_ids

        with self.lock:
            entry, model = self._entry(version)
            tokenizer = entry["tokenizer"]
            started = time.monotonic()
            ids = torch.tensor([prompt_ids(tokenizer, messages)], device=entry["device"])
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=int(tokenizer.pad_token_id),
                    eos_token_id=tokenizer.eos_token_id,
                    output_scores=True,
                    return_dict_in_generate=True,
                )
            new = out.sequences[0, ids.shape[1] :]
            scores = model.compute_transition_scores(
                out.sequences, out.scores, normalize_logits=True
            )[0]
            logprobs = [float(s) for s in scores if math.isfinite(float(s))]
            confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
            return {
                "text": tokenizer.decode(new, skip_special_tokens=True).strip(),
                "tokens": int(new.shape[0]),
                "confidence": round(min(1.0, max(0.0, confidence)), 4),
                "seconds": round(time.monotonic() - started, 3),
                "version_id": str(version.pk),
                "version_name": version.name,
                "server_pid": os.getpid(),
                "manifest_digest": manifest_digest(version.manifest),
            }


def health(cache: ModelCache) -> dict[str, Any]:
    torch = sys.modules.get("torch")  # imported once a model has loaded
    return {
        "status": "ok",
        "loaded": cache.loaded(),
        "loads": cache.loads,
        "merged": cache.merge_adapters,
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
    }


def answer_generate(cache: ModelCache, *, authorization: str, raw_body: bytes) -> tuple[int, dict]:
    """`POST /generate`, whichever server carries it: (HTTP status, JSON body)."""
    from training_app.models import ModelVersion

    if not hmac.compare_digest(authorization.encode(), f"Bearer {serving_token()}".encode()):
        return 401, {"detail": "the model server answers the Signoff web process only"}
    close_old_connections()
    try:
        body = json.loads(raw_body or b"{}")
        version = (
            ModelVersion.objects.select_related("base_model")
            .filter(pk=uuid.UUID(str(body.get("version_id"))))
            .first()
        )
        if version is None:
            return 404, {"detail": "no such model version"}
        # Only signed-off versions answer, whoever asks this port.
        if version.status not in SERVABLE:
            return 409, {"detail": f"{version.name} is {version.status}, not signed off"}
        max_new_tokens = int(body.get("max_new_tokens") or 64)
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            return 400, {"detail": f"max_new_tokens: 1 to {MAX_NEW_TOKENS}"}
        return 200, cache.generate(
            version=version, messages=body["messages"], max_new_tokens=max_new_tokens
        )
    except ApplicationError as exc:
        return exc.status_code, {"detail": exc.message, "code": exc.code, **exc.extra}
    except (KeyError, ValueError, TypeError) as exc:
        return 400, {"detail": f"bad request: {exc}"}
    finally:
        # A thread of the threaded server has its own connection: close it. A worker process
        # answers one request at a time and would keep it; closing costs one reconnect.
        connection.close()


def make_handler(cache: ModelCache) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("serving: " + format, *args)

        def do_GET(self) -> None:
            if self.path != "/health":
                return self._send(404, {"detail": "not found"})
            self._send(200, health(cache))

        def do_POST(self) -> None:
            if self.path != "/generate":
                return self._send(404, {"detail": "not found"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._send(400, {"detail": "bad request: Content-Length"})
            self._send(
                *answer_generate(
                    cache,
                    authorization=self.headers.get("Authorization", ""),
                    raw_body=self.rfile.read(length),
                )
            )

    return Handler


def make_server(host: str, port: int, *, merge_adapters: bool | None = None) -> ThreadingHTTPServer:
    """One process, requests on threads, generation one at a time (the model lock).
    `merge_adapters` None: the SERVING_MERGE_ADAPTERS setting (default off)."""
    if merge_adapters is None:
        merge_adapters = bool(settings.SIGNOFF_GOVERNANCE.get("SERVING_MERGE_ADAPTERS", False))
    server = ThreadingHTTPServer(
        (host, port), make_handler(ModelCache(merge_adapters=merge_adapters))
    )
    server.daemon_threads = True
    return server


def make_wsgi_app(cache: ModelCache):
    """The same two endpoints as a WSGI application, for a process pool (`serve_workers`)."""

    def generate(environ: dict[str, Any]) -> tuple[int, dict]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400, {"detail": "bad request: Content-Length"}
        return answer_generate(
            cache,
            authorization=environ.get("HTTP_AUTHORIZATION", ""),
            raw_body=environ["wsgi.input"].read(length) if length > 0 else b"",
        )

    def app(environ: dict[str, Any], start_response) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if method == "GET" and path == "/health":
            status, body = 200, health(cache)
        elif method == "POST" and path == "/generate":
            status, body = generate(environ)
        elif path in ("/health", "/generate"):
            status, body = 405, {"detail": "method not allowed"}
        else:
            status, body = 404, {"detail": "not found"}
        data = json.dumps(body).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return app


def default_workers() -> int:
    """SERVING_WORKERS: a number, or "auto": one per CPU core, at most two (each holds its own
    copy of the weights)."""
    from django.core.exceptions import ImproperlyConfigured

    from training_app.training.runtime import available_cores

    chosen = str(settings.SIGNOFF_GOVERNANCE.get("SERVING_WORKERS", "1")).strip().lower()
    if chosen == "auto":
        return min(2, available_cores())
    if not chosen.isdigit() or int(chosen) < 1:
        raise ImproperlyConfigured(
            f"SIGNOFF_SERVING_WORKERS={chosen!r}: a number of processes (1 or more) or 'auto'"
        )
    return int(chosen)


def serve_workers(
    host: str, port: int, *, workers: int, merge_adapters: bool | None = None
) -> None:
    """`workers` model server processes on one port (gunicorn's sync workers: a process takes
    the next connection only when it is free). Why processes: on a small CPU one answer's time
    is mostly per-operation overhead, not arithmetic (SmolLM2-135M: 29 tokens/s on 1 thread,
    30 on 2), so two processes of one thread each answer two questions in about the time of
    one (docs/serving.md, "Worker processes")."""
    from gunicorn.app.base import BaseApplication

    from training_app.training.runtime import available_cores

    if merge_adapters is None:
        merge_adapters = bool(settings.SIGNOFF_GOVERNANCE.get("SERVING_MERGE_ADAPTERS", False))
    threads = max(1, available_cores() // workers)
    timeout = int(settings.SIGNOFF_GOVERNANCE["SERVING_TIMEOUT_SECONDS"]) + 300

    class ModelWorkers(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", [f"{host}:{port}"])
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "sync")
            # A worker's first answer as a version loads and checks its weights: minutes on a
            # loaded machine, more than the web process waits for one answer.
            self.cfg.set("timeout", timeout)
            self.cfg.set("graceful_timeout", 5)
            self.cfg.set("errorlog", "-")
            self.cfg.set("loglevel", "warning")
            self.cfg.set("proc_name", "signoff-serve-models")

        def load(self):
            # In each worker, after the fork: its own cache and connections. Its torch threads
            # (its share of the cores) are set where the cache loads a model (resolve_device):
            # a second thread per process would spin against the other worker's.
            print(f"model worker {os.getpid()} ready ({threads} torch threads)", flush=True)
            return make_wsgi_app(ModelCache(merge_adapters=merge_adapters, processes=workers))

    connections.close_all()  # the workers open their own
    ModelWorkers().run()
