"""Every write of the training app: `from training_app.services import training_run_create`."""

from .base_models import base_model_default, base_model_register, base_model_verify
from .deployments import (
    artifact_verify,
    can_deploy,
    channel_deploy,
    channel_rollback,
    channel_save,
    model_version_retire,
)
from .evaluations import evaluation_execute, evaluation_request
from .leases import worker_owner
from .runs import can_launch_training, training_run_cancel, training_run_create
from .signoff import (
    can_request_signoff,
    signoff_decide,
    signoff_gate,
    signoff_refusal,
    signoff_request_create,
)
from .sweep import training_runs_sweep
from .versions import model_version_transition
from .worker import training_run_claim, training_run_execute

__all__ = [
    "artifact_verify",
    "base_model_default",
    "base_model_register",
    "base_model_verify",
    "can_deploy",
    "can_launch_training",
    "can_request_signoff",
    "channel_deploy",
    "channel_rollback",
    "channel_save",
    "evaluation_execute",
    "evaluation_request",
    "model_version_retire",
    "model_version_transition",
    "signoff_decide",
    "signoff_gate",
    "signoff_refusal",
    "signoff_request_create",
    "training_run_cancel",
    "training_run_claim",
    "training_run_create",
    "training_run_execute",
    "training_runs_sweep",
    "worker_owner",
]
