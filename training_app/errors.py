"""Domain errors of the training app; core/http.py maps them to HTTP answers."""

from core.errors import (
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


class ArtifactTampered(Conflict):
    """The adapter files on disk no longer match the version's SHA-256 manifest."""

    code = "artifact_tampered"
