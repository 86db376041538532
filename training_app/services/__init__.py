"""Every write of the training app: `from training_app.services import training_run_create`."""

from .base_models import base_model_default, base_model_register, base_model_verify
from .evaluations import evaluation_execute, evaluation_request
from .runs import (
    can_launch_training,
    training_run_cancel,
    training_run_claim,
    training_run_create,
    training_run_execute,
    training_runs_sweep,
    worker_owner,
)
from .versions import model_version_transition

__all__ = [
    "base_model_default",
    "base_model_register",
    "base_model_verify",
    "can_launch_training",
    "evaluation_execute",
    "evaluation_request",
    "model_version_transition",
    "training_run_cancel",
    "training_run_claim",
    "training_run_create",
    "training_run_execute",
    "training_runs_sweep",
    "worker_owner",
]
