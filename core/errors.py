"""Domain errors shared by every app; the API's exception handler maps them to HTTP answers."""


class ApplicationError(Exception):
    """A rule of the domain refused the request. Subclasses pick the HTTP status."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}


class ValidationFailed(ApplicationError):
    status_code = 400
    code = "invalid"


class PermissionRefused(ApplicationError):
    status_code = 403
    code = "permission_denied"


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class Conflict(ApplicationError):
    """The world changed under the caller (lease lost, item already resolved): retry or move on."""

    status_code = 409
    code = "conflict"


class AuditChainBroken(Exception):
    def __init__(self, seq: int | None, message: str):
        super().__init__(message)
        self.seq = seq
        self.message = message
