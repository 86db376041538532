"""Domain errors of serving; core/http.py maps them to HTTP answers."""

from core.errors import (
    ApplicationError,
)


class ServingUnavailable(ApplicationError):
    status_code = 503
    code = "serving_unavailable"
