"""Domain errors of the training app; core/http.py maps them to HTTP answers."""

from core.errors import (
    ApplicationError,
    Conflict,
    NotFound,
    PermissionRefused,
    ValidationFailed,
)


class InvalidTrainingRequest(ValidationFailed):
    """A hyperparameter or reference is wrong; `field` names it."""

    code = "invalid_training_request"


class TrainingForbidden(PermissionRefused):
    code = "training_forbidden"


class TrainingRunNotFound(NotFound):
    code = "training_run_not_found"


class ModelVersionNotFound(NotFound):
    code = "model_version_not_found"


class TransitionRefused(Conflict):
    """The object is no longer in the state the change needs (someone got there first)."""

    code = "transition_refused"


class LeaseLost(Conflict):
    """This worker no longer holds the run (the sweeper gave it to another)."""

    code = "lease_lost"


class UnsafeBaseModel(ValidationFailed):
    code = "unsafe_base_model"


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


class ArtifactTampered(Conflict):
    """The adapter files on disk no longer match the version's SHA-256 manifest."""

    code = "artifact_tampered"


class ServingUnavailable(ApplicationError):
    status_code = 503
    code = "serving_unavailable"
