"""One place that turns errors into `{"detail": ..., "code": ...}` answers."""

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.errors import ApplicationError

logger = logging.getLogger(__name__)


def _first_message(detail: Any, path: str = "") -> tuple[str, str]:
    """The first error in a nested DRF error structure, with the field path that produced it."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub = f"{path}.{key}" if path else str(key)
            if key == "non_field_errors":
                sub = path
            return _first_message(value, sub)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and value:
                sub = f"{path}[{index}]" if isinstance(value, dict) else path
                return _first_message(value, sub)
            if value:
                return path, str(value)
    return path, str(detail)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        body = {"detail": exc.message, "code": exc.code, **exc.extra}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body too large.", "code": "too_large"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RecursionError):
        # json.loads gives up on very deeply nested input with RecursionError, not ParseError.
        return Response(
            {"detail": "JSON parse error: nested too deeply.", "code": "parse_error"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, OperationalError):
        # Lost connection or lock timeout: the transaction rolled back, so a retry is safe.
        return Response(
            {"detail": "Temporary database error; nothing was saved. Retry.", "code": "retry"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_message(exc.detail)
        body = {
            "detail": f"{field}: {message}" if field else message,
            "code": "invalid",
            "field": field or None,
            "errors": exc.detail,
        }
        response.data = body
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = error_body(response.data["detail"])
    return response


def error_body(detail: Any) -> dict[str, str]:
    """`{"detail", "code"}` from a DRF error detail (a string that carries its code)."""
    return {"detail": str(detail), "code": getattr(detail, "code", "error")}


# Django's own error answers (config/urls.py): what goes wrong before a view runs (no route
# matches, a converter refuses the id, a refused Host header) or escapes it (a crash) is JSON
# in the same shape under /api/, and the usual HTML page elsewhere. DEBUG keeps Django's
# technical pages, which never call these.


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info == "/api" or request.path_info.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_request(request):
        return defaults.bad_request(request, exception)
    # The exception names what was refused (a host, a header): for the logs, not the client.
    return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_request(request):
        return defaults.page_not_found(request, exception)
    detail = exceptions.ErrorDetail(f"No endpoint at {request.path}.", code="not_found")
    return JsonResponse(error_body(detail), status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if not is_api_request(request):
        return defaults.server_error(request)
    return JsonResponse(error_body(exceptions.APIException().detail), status=500)


class RetryableDatabaseErrorMiddleware:
    """Pages: a lost connection or lock timeout rolled the request's transaction back, so the
    browser is told to retry (503 + Retry-After) instead of getting a bare 500. The API gets
    the same answer from `api_exception_handler`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception: Exception):
        if not isinstance(exception, OperationalError):
            return None
        logger.warning("database error on %s, answered 503: %s", request.path, exception)
        response = HttpResponse(
            "The database is briefly unavailable; nothing was saved. Try again in a moment.",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = "1"
        return response
