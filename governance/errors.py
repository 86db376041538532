"""Domain errors of governance; core/http.py maps them to HTTP answers."""

from core.errors import (
    Conflict,
    NotFound,
    PermissionRefused,
    ValidationFailed,
)


class GovernanceForbidden(PermissionRefused):
    """The actor's role, or separation of duties, does not allow this lifecycle step."""

    code = "governance_forbidden"


class SeparationOfDuties(PermissionRefused):
    code = "separation_of_duties"


class InvalidGovernanceRequest(ValidationFailed):
    code = "invalid_governance_request"


class ChannelNotFound(NotFound):
    code = "channel_not_found"


class SignoffRequestNotFound(NotFound):
    code = "signoff_request_not_found"


class RegressionGateFailed(Conflict):
    """The candidate is worse than the live version beyond tolerance; `extra` lists where."""

    code = "regression_gate_failed"
