"""Who may do what: one table from a named permission to the roles that hold it.

Services, DRF permission classes (`core.api.permissions.allowed`), page views
(`permission_required_for_page`) and the navigation all read this table, so a right is granted
or withdrawn in one place. The order of the roles in each entry is the order the API names them
in its 403 answer ("Requires one of the roles: ml_engineer, admin."): keep it when editing.

Rules that depend on an object stay with the app that owns it: who works a queue
(`reviews.roles.can_work_queue`) and which role signs off on a channel (its policy's
`approver_role`, `governance.services.signoff.signoff_refusal`).
"""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from .errors import ApplicationError
from .roles import Role, has_role

REVIEWER = Role.REVIEWER
LEAD = Role.LEAD
ML_ENGINEER = Role.ML_ENGINEER
APPROVER = Role.APPROVER
DEPLOYER = Role.DEPLOYER
AUDITOR = Role.AUDITOR
ADMIN = Role.ADMIN

POLICY: dict[str, tuple[Role, ...]] = {
    # Reading queues and reviews (each answer is then narrowed to what the user may see).
    "any_role": tuple(Role),
    # Claim, decide and undo review items; the queue's own role still decides which queues.
    "queues.work": (REVIEWER, LEAD, ADMIN),
    # Create and change queues, guidelines and routing rules.
    "queues.manage": (LEAD, ADMIN),
    "queues.agreement": (LEAD, ADMIN, AUDITOR, ML_ENGINEER),
    "routing.read": (LEAD, ADMIN, AUDITOR, ML_ENGINEER),
    "outputs.read": (LEAD, ADMIN, AUDITOR, ML_ENGINEER, APPROVER),
    "outputs.ingest": (ML_ENGINEER, ADMIN),
    "outputs.mark_gold": (LEAD, ADMIN),
    "audit.read": (AUDITOR, ADMIN),
    "datasets.read": (ML_ENGINEER, ADMIN, AUDITOR, APPROVER),
    "datasets.build": (ML_ENGINEER, ADMIN),
    # Training runs, versions, evaluations, channels and monitoring, read-only.
    "training.view": (ML_ENGINEER, APPROVER, DEPLOYER, AUDITOR, ADMIN),
    "training.launch": (ML_ENGINEER, ADMIN),
    "signoff.request": (ML_ENGINEER, ADMIN),
    # Every role may reach the decision; the channel's policy names the role that signs off.
    "signoff.decide": tuple(Role),
    # Deploying and rolling back are the deployers' alone (admins included): separation of
    # duties between who configures a channel and who puts a version live on it.
    "channel.deploy": (DEPLOYER,),
    "version.retire": (DEPLOYER, ADMIN),
    "channel.configure": (ADMIN,),
    "channel.generate": (ML_ENGINEER, DEPLOYER, ADMIN),
    "monitoring.configure": (ADMIN,),
    "monitoring.retrain": (ML_ENGINEER, ADMIN),
    "monitoring.acknowledge": (ML_ENGINEER, ADMIN),
    "webhooks.configure": (ADMIN,),
}


def roles_for(permission: str) -> tuple[Role, ...]:
    """The roles holding `permission`; a name missing from the table is a programming error."""
    try:
        return POLICY[permission]
    except KeyError:
        raise KeyError(f"No permission named {permission!r} in core.permissions.POLICY") from None


def can(user: AbstractBaseUser | AnonymousUser, permission: str) -> bool:
    return has_role(user, *roles_for(permission))


def require(
    user: AbstractBaseUser | AnonymousUser, permission: str, refusal: ApplicationError
) -> None:
    """Raise `refusal` (each service words its own) unless `user` holds `permission`."""
    if not can(user, permission):
        raise refusal


def permission_required_for_page(
    permission: str, message: str
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A page view decorator: 403 with `message` unless the user holds `permission`. Put it
    under `@login_required`, so that a visitor who is not signed in is sent to sign in."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not can(request.user, permission):
                raise PermissionDenied(message)
            return view(request, *args, **kwargs)

        return checked

    return decorator
