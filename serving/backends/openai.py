"""OpenAI-compatible inference engines: vLLM (GPU boxes) or llama.cpp's llama-server (CPU
boxes), one or several. docs/serving.md says how to run them.

Adapters reach the engines through storage they share with Signoff: a deploy writes the
version's verified adapter under ENGINE_ADAPTERS_DIR/<adapter name>/ and then
- vLLM: `POST /v1/load_lora_adapter {lora_name, lora_path}` on every engine (the engine runs
  with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); a request names the adapter as its `model`;
  rollback and retire call `POST /v1/unload_lora_adapter {lora_name}`.
- llama.cpp: the PEFT adapter converted to a GGUF LoRA (serving/backends/gguf_lora.py).
  llama-server loads adapters only when it starts (`--lora FILE --lora-init-without-apply`),
  so a deploy checks that every engine lists the file (`GET /lora-adapters`) and refuses,
  saying what to restart with, when one does not; a request selects its adapter with
  `lora: [{id, scale: 1}]` (adapters a request does not name get scale 0). Taking a version
  out sets its global scale to 0 (`POST /lora-adapters`); it leaves memory at the next restart.

A deploy must reach every engine: one that is down or refuses is reported (in the deployment's
audit event) and retried by the `engine_adapters` maintenance step; when none takes the adapter
the deployment is refused. Generate spreads requests over the engines and skips one that is down.
"""

import itertools
import json
import logging
import math
import shutil
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any

from serving.backends import adapter_name
from serving.client import ServerDown, ServerRefused
from serving.errors import EngineRefused, ServingUnavailable
from training_app.errors import ArtifactTampered
from training_app.models import ModelVersion
from training_app.services.versions import ADAPTER_FILES, manifest_digest
from training_app.training.base_model import sha256_file

logger = logging.getLogger(__name__)

GGUF_NAME = "adapter.gguf"


def _detail(raw: bytes) -> str:
    """The message of an engine's error body (vLLM and llama.cpp nest it under "error")."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return raw.decode(errors="replace").strip()[:500]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or body)[:500]
        return str(error)[:500]
    return str(body)[:500]


def engine_request(
    method: str, url: str, path: str, body: Any, *, api_key: str, timeout: float
) -> Any:
    """One call to an engine: its JSON answer, or its text (vLLM answers loads in plain text)."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        raise ServerRefused(exc.code, {"detail": _detail(exc.read())}) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException) as exc:
        raise ServerDown(str(getattr(exc, "reason", exc))) from exc
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return raw.decode(errors="replace")


def _confidence(choice: dict[str, Any]) -> float | None:
    """exp(mean log-probability of the answer's tokens), as the embedded server computes it."""
    content = (choice.get("logprobs") or {}).get("content") or []
    values = [float(t["logprob"]) for t in content if math.isfinite(float(t.get("logprob", 0)))]
    if not values:
        return None
    return round(min(1.0, max(0.0, math.exp(sum(values) / len(values)))), 4)


class OpenAIBackend:
    _turn = itertools.count()  # round-robin over the engines, shared by the process's threads

    def __init__(
        self,
        *,
        urls: list[str],
        api_key: str,
        flavour: str,
        adapters_dir: str | Path,
        adapters_path: str,
        admin_timeout: float = 60.0,
    ) -> None:
        self.urls = urls
        self.api_key = api_key
        self.flavour = flavour
        self.adapters_dir = Path(adapters_dir)
        self.adapters_path = adapters_path.rstrip("/")
        self.admin_timeout = admin_timeout

    def _call(self, method: str, url: str, path: str, body: Any = None, **kw: Any) -> Any:
        timeout = kw.pop("timeout", self.admin_timeout)
        return engine_request(method, url, path, body, api_key=self.api_key, timeout=timeout)

    # -- adapters on shared storage ------------------------------------------------------------

    def engine_path(self, version: ModelVersion) -> str:
        """Where the engines find the version's adapter (a folder for vLLM, a GGUF file for
        llama.cpp)."""
        folder = f"{self.adapters_path}/{adapter_name(version)}"
        return f"{folder}/{GGUF_NAME}" if self.flavour == "llamacpp" else folder

    def export(self, version: ModelVersion) -> str:
        """Write the version's adapter where the engines read it, checked against the manifest
        after copying (what the engine reads is what was signed off), converted to GGUF for
        llama.cpp. Kept when already there and intact."""
        name = adapter_name(version)
        target = self.adapters_dir / name
        wanted = {n: version.manifest.get(n) for n in ADAPTER_FILES}
        ready = target.is_dir() and all(
            (target / n).is_file() and sha256_file(target / n) == h for n, h in wanted.items()
        )
        if ready and (self.flavour != "llamacpp" or (target / GGUF_NAME).is_file()):
            return self.engine_path(version)
        tmp = target.with_name(name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for n in ADAPTER_FILES:
            shutil.copyfile(Path(version.artifact_dir) / n, tmp / n)
        if {n: sha256_file(tmp / n) for n in ADAPTER_FILES} != wanted:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ArtifactTampered(
                f"The adapter files of {version.name} changed while copying them for the engines."
            )
        if self.flavour == "llamacpp":
            from serving.backends.gguf_lora import UnsupportedAdapter, lora_to_gguf

            try:
                lora_to_gguf(
                    tmp,
                    tmp / GGUF_NAME,
                    base_config=Path(version.base_model.folder) / "config.json",
                )
            except UnsupportedAdapter as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise EngineRefused(
                    f"{version.name}'s adapter cannot be converted for llama.cpp: {exc}"
                ) from exc
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return self.engine_path(version)

    # -- what each engine has loaded -----------------------------------------------------------

    def _llamacpp_adapters(self, url: str) -> dict[str, int]:
        """llama-server's adapters as {adapter name: id}, by the folder their file sits in."""
        listed = self._call("GET", url, "/lora-adapters")
        found = {}
        for entry in listed if isinstance(listed, list) else []:
            parts = str(entry.get("path", "")).replace("\\", "/").rstrip("/").split("/")
            if len(parts) >= 2 and parts[-1] == GGUF_NAME and parts[-2].startswith("signoff-"):
                found[parts[-2]] = int(entry["id"])
        return found

    def present(self, url: str) -> set[str]:
        """The Signoff adapters the engine at `url` has loaded."""
        if self.flavour == "llamacpp":
            return set(self._llamacpp_adapters(url))
        listed = self._call("GET", url, "/v1/models")
        return {
            m["id"] for m in listed.get("data", []) if str(m.get("id", "")).startswith("signoff-")
        }

    def _load_on(self, url: str, version: ModelVersion, path: str) -> str:
        name = adapter_name(version)
        if name in self.present(url):
            return "already loaded"
        if self.flavour == "llamacpp":
            raise ServerRefused(
                409,
                {
                    "detail": f"llama-server does not have {path}: it loads LoRA adapters only "
                    f"when it starts. Restart it with `--lora {path} --lora-init-without-apply` "
                    "(docs/serving.md), then deploy again."
                },
            )
        self._call("POST", url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        return "loaded"

    def _unload_on(self, url: str, version: ModelVersion) -> str:
        name = adapter_name(version)
        if self.flavour == "llamacpp":
            ids = self._llamacpp_adapters(url)
            if name not in ids:
                return "absent"
            self._call("POST", url, "/lora-adapters", [{"id": ids[name], "scale": 0.0}])
            return "scale 0 (in memory until the engine restarts without it)"
        if name not in self.present(url):
            return "absent"
        self._call("POST", url, "/v1/unload_lora_adapter", {"lora_name": name})
        return "unloaded"

    # -- the backend interface -----------------------------------------------------------------

    def load_adapter(self, *, version: ModelVersion) -> dict[str, Any]:
        path = self.export(version)
        loaded: dict[str, str] = {}
        failed: dict[str, str] = {}
        refused = False
        for url in self.urls:
            try:
                loaded[url] = self._load_on(url, version, path)
            except ServerDown as exc:
                failed[url] = f"not answering ({exc})"
            except ServerRefused as exc:
                refused = True
                failed[url] = f"refused ({exc.status}): {exc}"
        if not loaded:
            problems = "; ".join(f"{url}: {why}" for url, why in failed.items())
            error = EngineRefused if refused else ServingUnavailable
            raise error(
                f"No inference engine took {version.name}'s adapter ({problems}). "
                "Nothing was deployed.",
                extra={"engines": failed},
            )
        if failed:
            logger.warning(
                "%s reached %d of %d engines; the engine_adapters maintenance step retries %s",
                version.name,
                len(loaded),
                len(self.urls),
                ", ".join(failed),
            )
        report: dict[str, Any] = {"adapter": adapter_name(version), "engines": loaded}
        if failed:
            report["failed"] = failed
        return report

    def unload_adapter(self, *, version: ModelVersion) -> dict[str, Any]:
        """Best effort: an engine that is down keeps the adapter until the maintenance step
        takes it out (nobody else can ask for it: Signoff holds the engines' key and asks for
        live versions only)."""
        done: dict[str, str] = {}
        for url in self.urls:
            try:
                done[url] = self._unload_on(url, version)
            except (ServerDown, ServerRefused) as exc:
                done[url] = f"failed: {exc}"
                logger.warning("could not take %s out of %s: %s", version.name, url, exc)
        return {"adapter": adapter_name(version), "engines": done}

    def sync(self, *, live: list[ModelVersion]) -> dict[str, list[str]]:
        """Load the live versions' adapters where they are missing (an engine that was down
        during a deploy, or restarted); take out those of versions live nowhere."""
        wanted = {adapter_name(v): v for v in live}
        result: dict[str, list[str]] = {"loaded": [], "unloaded": [], "failed": []}
        for url in self.urls:
            try:
                present = self.present(url)
            except (ServerDown, ServerRefused) as exc:
                result["failed"].append(f"{url} ({exc})")
                continue
            for name, version in wanted.items():
                if name in present:
                    continue
                try:
                    self._load_on(url, version, self.export(version))
                    result["loaded"].append(f"{version.name} on {url}")
                except (ServerDown, ServerRefused, ArtifactTampered, EngineRefused) as exc:
                    result["failed"].append(f"{version.name} on {url} ({exc})")
            if self.flavour == "vllm":
                for name in sorted(present - set(wanted)):
                    try:
                        self._call("POST", url, "/v1/unload_lora_adapter", {"lora_name": name})
                        result["unloaded"].append(f"{name} on {url}")
                    except (ServerDown, ServerRefused) as exc:
                        result["failed"].append(f"{name} on {url} ({exc})")
        return result

    def _chat(
        self,
        url: str,
        version: ModelVersion,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        timeout: float,
    ) -> dict[str, Any]:
        name = adapter_name(version)
        body: dict[str, Any] = {
            "model": name,
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": 0,  # greedy, as the embedded server and the evaluations answer
            "logprobs": True,
        }
        if self.flavour == "llamacpp":
            ids = self._llamacpp_adapters(url)
            if name not in ids:
                raise ServerRefused(404, {"detail": f"{self.engine_path(version)} not loaded"})
            body["lora"] = [{"id": ids[name], "scale": 1.0}]
        started = time.monotonic()
        answer = self._call("POST", url, "/v1/chat/completions", body, timeout=timeout)
        seconds = time.monotonic() - started
        try:
            choice = answer["choices"][0]
            text = (choice["message"].get("content") or "").strip()
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ServerRefused(502, {"detail": "not a chat completion"}) from exc
        usage = answer.get("usage") or {}
        return {
            "text": text,
            "tokens": int(usage.get("completion_tokens") or 0),
            "confidence": _confidence(choice),
            "seconds": round(seconds, 3),
            "version_id": str(version.pk),
            "version_name": version.name,
            "manifest_digest": manifest_digest(version.manifest),
            "engine": url,
        }

    def generate(
        self,
        *,
        version: ModelVersion,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        timeout: float,
    ) -> dict[str, Any]:
        start = next(self._turn) % len(self.urls)
        problems: dict[str, str] = {}
        for url in self.urls[start:] + self.urls[:start]:
            try:
                return self._chat(url, version, messages, max_new_tokens, timeout)
            except ServerDown as exc:
                problems[url] = f"not answering ({exc})"
            except ServerRefused as exc:
                if exc.status == 404 and self.flavour == "vllm":
                    # The live version's adapter is missing here (engine restarted, or down
                    # during the deploy): load it and ask again, once.
                    try:
                        self._load_on(url, version, self.export(version))
                        return self._chat(url, version, messages, max_new_tokens, timeout)
                    except (ServerDown, ServerRefused) as again:
                        problems[url] = f"adapter missing and not loadable ({again})"
                        continue
                problems[url] = f"refused ({exc.status}): {exc}"
        raise ServingUnavailable(
            f"No inference engine answered for {version.name}: "
            + "; ".join(f"{url}: {why}" for url, why in problems.items()),
            extra={"engines": problems},
        )
