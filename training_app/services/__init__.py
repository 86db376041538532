"""Every write of the training app: `from training_app.services import training_run_create`."""

from training_app.services.base_models import (
    base_model_default,
    base_model_register,
    base_model_verify,
)
from training_app.services.evaluations import evaluation_execute, evaluation_request
from training_app.services.leases import worker_owner
from training_app.services.runs import (
    can_launch_training,
    training_run_cancel,
    training_run_check,
    training_run_create,
)
from training_app.services.sweep import training_runs_sweep
from training_app.services.versions import artifact_verify, model_version_transition
from training_app.services.worker import training_run_claim, training_run_execute

__all__ = [
    "artifact_verify",
    "base_model_default",
    "base_model_register",
    "base_model_verify",
    "can_launch_training",
    "evaluation_execute",
    "evaluation_request",
    "model_version_transition",
    "training_run_cancel",
    "training_run_check",
    "training_run_claim",
    "training_run_create",
    "training_run_execute",
    "training_runs_sweep",
    "worker_owner",
]
