"""The embedded model server (`manage.py serve_models`): it loads a version's adapter itself
the first time the version is asked (checking the manifest), so deploying asks nothing of it."""

from typing import Any

from serving.client import ServerDown, ServerRefused, call
from serving.errors import ServingUnavailable
from training_app.errors import ArtifactTampered
from training_app.models import ModelVersion


class EmbeddedBackend:
    def __init__(self, *, url: str) -> None:
        self.url = url

    def generate(
        self,
        *,
        version: ModelVersion,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        timeout: float,
    ) -> dict[str, Any]:
        try:
            return call(
                self.url,
                "/generate",
                {
                    "version_id": str(version.pk),
                    "messages": messages,
                    "max_new_tokens": max_new_tokens,
                },
                timeout=timeout,
            )
        except ServerDown as exc:
            raise ServingUnavailable(
                f"The model server at {self.url} is not answering ({exc}). Start it with "
                "`manage.py serve_models` (`make demo` starts it).",
            ) from exc
        except ServerRefused as exc:
            if exc.body.get("code") == ArtifactTampered.code:
                raise ArtifactTampered(str(exc)) from exc
            raise ServingUnavailable(f"The model server refused: {exc}") from exc

    def load_adapter(self, *, version: ModelVersion) -> dict[str, Any]:
        return {}

    def unload_adapter(self, *, version: ModelVersion) -> dict[str, Any]:
        return {}

    def sync(self, *, live: list[ModelVersion]) -> dict[str, list[str]]:
        return {}
