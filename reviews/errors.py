from core.errors import Conflict, NotFound, PermissionRefused, ValidationFailed


class LeaseLost(Conflict):
    """The caller no longer holds a live lease on the item (expired, released or taken over)."""

    code = "lease_lost"


class AlreadyResolved(Conflict):
    code = "already_resolved"


class QueueNotFound(NotFound):
    code = "queue_not_found"


class IngestInvalid(ValidationFailed):
    code = "invalid_output"


class QueueForbidden(PermissionRefused):
    code = "queue_forbidden"
