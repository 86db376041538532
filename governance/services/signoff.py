"""Sign-off: a version is put forward for one channel, evaluated against what is live there
(or, for the channel's first release, against what it was trained from), and approved or
rejected by approvers under the channel's policy.

Separation of duties, the regression gate and the comment rules live here, so the pages, the
API and anything else that approves go through the same checks."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit_append
from core.events import event_publish
from core.lifecycle import transition
from core.permissions import can
from core.roles import Role, has_role
from governance.errors import (
    GovernanceForbidden,
    InvalidGovernanceRequest,
    RegressionGateFailed,
    SeparationOfDuties,
)
from governance.models import Approval, Channel, SignoffRequest
from governance.policy import channel_policy, gate_check
from training_app.errors import TransitionRefused
from training_app.models import Evaluation, ModelVersion
from training_app.services.evaluations import evaluation_request
from training_app.services.versions import model_version_transition

# A version put forward for a further channel keeps its status (see ModelVersion.TRANSITIONS).
REQUESTABLE = {
    ModelVersion.Status.EVALUATED,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.DEPLOYED,
}


def _event(request: SignoffRequest) -> dict[str, Any]:
    """What a webhook receiver learns about a sign-off request."""
    return {
        "signoff_request": request.pk,
        "version": str(request.version_id),
        "version_name": request.version.name,
        "channel": request.channel.name,
    }


def can_request_signoff(user: AbstractBaseUser) -> bool:
    return can(user, "signoff.request")


def signoff_request_create(
    *,
    user: AbstractBaseUser,
    version: ModelVersion,
    channel: Channel,
    comment: str = "",
    enqueue: bool = True,
) -> SignoffRequest:
    """Put `version` forward for `channel`, and queue its comparisons with the version live
    there (eval split and the channel's regression set) as evaluation jobs; with nothing live,
    the same comparisons with its parent (or the bare base model)."""
    if not can_request_signoff(user):
        raise GovernanceForbidden("Only ML engineers and admins put versions forward.")
    with transaction.atomic():
        # Locked: two requests for the same version at once would both pass the checks.
        version = (
            ModelVersion.objects.select_for_update(of=("self",))
            .select_related("base_model", "parent")
            .get(pk=version.pk)
        )
        channel = Channel.objects.select_related("live_version").get(pk=channel.pk)
        if version.status not in REQUESTABLE:
            raise TransitionRefused(
                f"Model version {version.name} is {version.status}; only an evaluated (or "
                "already approved) version can be put forward for sign-off."
            )
        if channel.live_version_id == version.pk:
            raise TransitionRefused(f"{version.name} is already live on {channel.name}.")
        if SignoffRequest.objects.filter(version=version, status="open").exists():
            raise TransitionRefused(f"{version.name} already has an open sign-off request.")
        if SignoffRequest.objects.filter(
            version=version, channel=channel, status=SignoffRequest.Status.APPROVED
        ).exists():
            raise TransitionRefused(f"{version.name} is already approved for {channel.name}.")
        live = channel.live_version
        request = SignoffRequest.objects.create(
            version=version,
            channel=channel,
            policy=channel_policy(channel),
            live_version=live,
            requested_by=user,
            comment=comment.strip(),
        )
        if version.status == ModelVersion.Status.EVALUATED:
            model_version_transition(
                version=version,
                to=ModelVersion.Status.AWAITING_SIGNOFF,
                actor=user,
                payload={"signoff_request": request.pk, "channel": channel.name},
            )
        event_publish(event="version.awaiting_signoff", payload=_event(request))
        audit_append(
            actor=user,
            action="signoff.requested",
            object_type="model_version",
            object_id=version.pk,
            payload={
                "signoff_request": request.pk,
                "channel": channel.name,
                "policy": request.policy,
                "live_version": str(live.pk) if live else None,
                "comment": request.comment,
            },
        )
        comparable = live is not None and live.base_model_id == version.base_model_id
        if comparable or live is None:
            # With nothing live, a first release is held to what it was trained from (its
            # parent, else the bare base model: evaluation_request's default) on both splits,
            # so the gate never passes for want of something to compare with.
            evaluation_request(
                user=user,
                version=version,
                reference=live,
                channel=channel,
                signoff_request=request,
                enqueue=enqueue,
            )
        if channel.regression_cases.exists():
            # Against the live version when there is one; else the parent (or the bare base).
            evaluation_request(
                user=user,
                version=version,
                reference=live if comparable else None,
                split="regression",
                channel=channel,
                signoff_request=request,
                enqueue=enqueue,
            )
    return request


def _gate_comparison(*, request: SignoffRequest) -> dict[str, Any]:
    """What the gate compares the candidate with: the version live on the channel when the
    request was made, else what the candidate was trained from (its parent, else the bare
    base model), which signoff_request_create queued the comparisons against.

    `reference_id` is the Evaluation.reference of those comparisons (None: the bare base)."""
    live = request.live_version
    if live is not None:
        return {
            "kind": "live",
            "name": live.name,
            "label": f"the live version {live.name}",
            "reference_id": live.pk,
        }
    version = request.version
    if version.parent_id is not None:
        return {
            "kind": "base",
            "name": version.parent.name,
            "label": f"its parent version {version.parent.name}",
            "reference_id": version.parent_id,
        }
    return {
        "kind": "base",
        "name": version.base_model.name,
        "label": f"the base model {version.base_model.name}",
        "reference_id": None,
    }


def signoff_gate(*, request: SignoffRequest) -> dict[str, Any]:
    """The regression gate for `request`: the candidate against the live version it was put
    forward against (with nothing live, against its parent or the bare base model), on every
    gated metric, on the eval split and the regression set."""
    evaluations = list(request.evaluations.select_related("reference"))
    pending = [e for e in evaluations if e.status in (Evaluation.Status.QUEUED, "running")]
    failed = [e for e in evaluations if e.status == Evaluation.Status.FAILED]
    live = request.live_version
    compared = _gate_comparison(request=request)
    reference_id = compared.pop("reference_id")
    result: dict[str, Any] = {
        "live_version": live.name if live else None,
        "compared_with": compared,
        "tolerances": request.policy.get("gate", {}),
        "pending": len(pending),
        "failed_evaluations": [
            {"id": str(e.pk), "split": e.split, "reason": e.failure_reason} for e in failed
        ],
        "checks": [],
        "problems": [],
    }
    comparisons = [
        {
            "split": e.split,
            "candidate": e.metrics.get("candidate", {}),
            "live": e.metrics.get("reference", {}),
        }
        for e in evaluations
        if e.status == Evaluation.Status.DONE and e.reference_id == reference_id
    ]
    if live is None:
        result["note"] = (
            f"Nothing is live on the channel: the candidate is compared with {compared['label']}."
        )
        if not comparisons and not pending:
            # Only a request made before first releases were compared gets here: no
            # comparison is not a pass, the approver overrides with a reason if it must go.
            result["problems"].append(
                f"No finished comparison with {compared['label']}: there was nothing to "
                "compare against."
            )
    elif live.base_model_id != request.version.base_model_id:
        result["problems"].append("The live version has another base model: not comparable.")
        comparisons = []
    elif not comparisons and not pending:
        result["problems"].append("No finished comparison with the live version.")
    result["checks"] = gate_check(tolerances=result["tolerances"], comparisons=comparisons)
    for check in result["checks"]:
        if not check["passed"]:
            result["problems"].append(
                f"{check['metric']} on the {check['split']} split is worse than "
                f"{compared['label']} by {check['worse_by']:.4f} (tolerance {check['tolerance']})"
            )
    for e in failed:
        result["problems"].append(f"The {e.split} evaluation failed: {e.failure_reason}")
    result["passed"] = not result["problems"] and not pending
    return result


def separation_of_duties_conflict(*, user: AbstractBaseUser, version: ModelVersion) -> str:
    """Why `user` may not approve `version` (empty when they may)."""
    if user.pk == version.run.created_by_id or user.pk == version.created_by_id:
        return "You launched this version's training run: someone else must approve it."
    if user.pk == version.dataset_version.created_by_id:
        return "You built this version's dataset: someone else must approve it."
    return ""


def signoff_refusal(
    *, user: AbstractBaseUser, request: SignoffRequest
) -> GovernanceForbidden | SeparationOfDuties | None:
    """Why `user` may not decide on `request` (None when they may); pages use it to hide the
    form, signoff_decide raises it."""
    policy = request.policy
    role = policy.get("approver_role", Role.APPROVER)
    if not has_role(user, role):
        return GovernanceForbidden(f"Only users with the {role} role sign versions off.")
    if policy.get("separation_of_duties", True):
        conflict = separation_of_duties_conflict(user=user, version=request.version)
        if conflict:
            return SeparationOfDuties(conflict)
    return None


def signoff_decide(
    *,
    user: AbstractBaseUser,
    request: SignoffRequest,
    decision: str,
    comment: str,
    override: bool = False,
    override_reason: str = "",
) -> Approval:
    """Record one approver's decision. The request (and the version, when it was awaiting
    sign-off) is approved once the policy's number of approvals is reached, and rejected by
    the first rejection."""
    if decision not in Approval.Decision.values:
        raise InvalidGovernanceRequest("Decide approve or reject.", field="decision")
    comment = (comment or "").strip()
    if not comment:
        raise InvalidGovernanceRequest("A decision needs a comment.", field="comment")
    override_reason = (override_reason or "").strip()
    if override and decision != Approval.Decision.APPROVE:
        raise InvalidGovernanceRequest("Only an approval can override.", field="override")
    if override and not override_reason:
        raise InvalidGovernanceRequest("An override needs its reason.", field="override_reason")
    with transaction.atomic():
        # Locked: two approvers reaching the quorum at once must not both approve it.
        request = (
            SignoffRequest.objects.select_for_update(of=("self",))
            .select_related("version__run", "version__dataset_version", "channel", "live_version")
            .get(pk=request.pk)
        )
        refusal = signoff_refusal(user=user, request=request)
        if refusal is not None:
            raise refusal
        if request.status != SignoffRequest.Status.OPEN:
            raise TransitionRefused(f"Sign-off request {request.pk} is {request.status}.")
        if request.approvals.filter(approver=user).exists():
            raise TransitionRefused("You already decided on this request.")
        gate = signoff_gate(request=request)
        if decision == Approval.Decision.APPROVE:
            if gate["pending"]:
                raise TransitionRefused(
                    "The evaluations are still running: read the report when they finish."
                )
            if not gate["passed"]:
                if not override:
                    raise RegressionGateFailed(
                        "Regression gate: " + "; ".join(gate["problems"]),
                        extra={"gate": gate},
                    )
                if not request.policy.get("allow_override", True):
                    raise GovernanceForbidden(
                        f"The {request.channel.name} policy forbids overriding the gate."
                    )
            elif override:
                raise InvalidGovernanceRequest(
                    "The gate passed: there is nothing to override.", field="override"
                )
        approval = Approval.objects.create(
            request=request,
            approver=user,
            decision=decision,
            comment=comment,
            override=override,
            override_reason=override_reason,
            gate=gate,
        )
        approvals = request.approvals.filter(decision=Approval.Decision.APPROVE).count()
        required = int(request.policy.get("approvals_required", 1))
        audit_append(
            actor=user,
            action="signoff.override" if override else f"signoff.{decision}",
            object_type="model_version",
            object_id=request.version_id,
            payload={
                "signoff_request": request.pk,
                "channel": request.channel.name,
                "decision": decision,
                "comment": comment,
                "override": override,
                "override_reason": override_reason,
                "gate_passed": gate["passed"],
                "gate_compared_with": gate["compared_with"],
                "gate_problems": gate["problems"],
                "approvals": approvals,
                "required": required,
            },
        )
        outcome = None
        if decision == Approval.Decision.REJECT:
            outcome = SignoffRequest.Status.REJECTED
        elif approvals >= required:
            outcome = SignoffRequest.Status.APPROVED
        if outcome is not None:
            _request_close(request=request, to=outcome, actor=user)
    return approval


def _request_close(*, request: SignoffRequest, to: str, actor: AbstractBaseUser) -> None:
    # The caller audits: through model_version_transition, or as signoff.request_{to} below.
    transition(
        request,
        to,
        refused=lambda frm, to: TransitionRefused(
            f"Sign-off request {request.pk} cannot become {to}."
        ),
        changed=lambda frm: TransitionRefused(f"Sign-off request {request.pk} changed under us."),
        touch=("decided_at",),
    )
    if to == SignoffRequest.Status.APPROVED:
        event_publish(event="version.approved", payload=_event(request))
    version = ModelVersion.objects.select_for_update().get(pk=request.version_id)
    if version.status == ModelVersion.Status.AWAITING_SIGNOFF:
        model_version_transition(
            version=version,
            to=(
                ModelVersion.Status.APPROVED
                if to == SignoffRequest.Status.APPROVED
                else ModelVersion.Status.REJECTED
            ),
            actor=actor,
            payload={"signoff_request": request.pk, "channel": request.channel.name},
        )
    else:
        audit_append(
            actor=actor,
            action=f"signoff.request_{to}",
            object_type="model_version",
            object_id=version.pk,
            payload={"signoff_request": request.pk, "channel": request.channel.name},
        )
