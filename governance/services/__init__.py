"""Every write of governance: `from governance.services import signoff_decide`."""

from governance.services.deployments import (
    can_deploy,
    channel_deploy,
    channel_rollback,
    channel_save,
    model_version_retire,
)
from governance.services.signoff import (
    can_request_signoff,
    signoff_decide,
    signoff_gate,
    signoff_refusal,
    signoff_request_create,
)

__all__ = [
    "can_deploy",
    "can_request_signoff",
    "channel_deploy",
    "channel_rollback",
    "channel_save",
    "model_version_retire",
    "signoff_decide",
    "signoff_gate",
    "signoff_refusal",
    "signoff_request_create",
]
