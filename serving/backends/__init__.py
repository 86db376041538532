"""One client interface to whatever answers for Signoff: the embedded model server
(`manage.py serve_models`, the default, what `make demo` runs) or OpenAI-compatible inference
engines (vLLM on GPU boxes, llama.cpp's llama-server on CPU boxes), chosen by
SIGNOFF_SERVING["BACKEND"]. Plain HTTP only: the web process never imports torch.

Every backend answers `generate` with the same dict (text, tokens, confidence, seconds,
version_id, version_name, manifest_digest), so what is recorded and routed into review does not
depend on which one answered; `load_adapter` / `unload_adapter` return a report per engine."""

from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from training_app.models import ModelVersion


def adapter_name(version: ModelVersion) -> str:
    """The name an engine knows a version's adapter by (vLLM: the `model` of a request)."""
    return f"signoff-{version.pk}"


class Backend(Protocol):
    def generate(
        self,
        *,
        version: ModelVersion,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        timeout: float,
    ) -> dict[str, Any]: ...

    def load_adapter(self, *, version: ModelVersion) -> dict[str, Any]: ...

    def unload_adapter(self, *, version: ModelVersion) -> dict[str, Any]: ...

    def sync(self, *, live: list[ModelVersion]) -> dict[str, list[str]]: ...


def serving_backend() -> Backend:
    conf = settings.SIGNOFF_SERVING
    kind = conf["BACKEND"]
    if kind == "embedded":
        from serving.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(url=settings.SIGNOFF_GOVERNANCE["SERVING_URL"])
    if kind == "openai":
        from serving.backends.openai import OpenAIBackend

        if not conf["ENGINE_URLS"]:
            raise ImproperlyConfigured(
                "SIGNOFF_SERVING_BACKEND=openai needs SIGNOFF_ENGINE_URLS (comma-separated)."
            )
        if conf["ENGINE_FLAVOUR"] not in ("vllm", "llamacpp"):
            raise ImproperlyConfigured("SIGNOFF_ENGINE_FLAVOUR is vllm or llamacpp.")
        return OpenAIBackend(
            urls=list(conf["ENGINE_URLS"]),
            api_key=conf["ENGINE_API_KEY"],
            flavour=conf["ENGINE_FLAVOUR"],
            adapters_dir=conf["ENGINE_ADAPTERS_DIR"],
            adapters_path=conf["ENGINE_ADAPTERS_PATH"] or str(conf["ENGINE_ADAPTERS_DIR"]),
            admin_timeout=conf["ENGINE_ADMIN_TIMEOUT_SECONDS"],
        )
    raise ImproperlyConfigured(f"SIGNOFF_SERVING_BACKEND is embedded or openai, not {kind!r}.")
