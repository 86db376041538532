"""Domain errors of serving; core/http.py maps them to HTTP answers."""

from core.errors import (
    ApplicationError,
)


class ServingUnavailable(ApplicationError):
    status_code = 503
    code = "serving_unavailable"


class EngineRefused(ApplicationError):
    """An inference engine answered, and refused (e.g. a rank above its --max-lora-rank, an
    adapter llama-server was not started with)."""

    status_code = 502
    code = "engine_refused"
