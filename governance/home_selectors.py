"""What each governance role finds on its home page: the approvers' inbox, the deployers'
releases waiting for a channel, the auditors' versions, the ML engineers' runs."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.urls import NoReverseMatch, reverse

from core.models import AuditEvent, AuditHead
from core.permissions import can
from core.roles import Role, has_role
from datasets_app.selectors import dataset_versions_list
from governance.errors import SeparationOfDuties
from governance.models import Channel, SignoffRequest
from governance.services import signoff_refusal
from training_app.models import ModelVersion
from training_app.selectors import model_versions_list, training_runs_list

RECENT = 10


@dataclass(frozen=True)
class AwaitingSignoff:
    request: SignoffRequest
    # Why this user may not decide it ("" when they may): shown, so an approver who trained
    # the version sees it is someone else's to decide instead of wondering where it went.
    not_yours: str = ""


def signoffs_awaiting(*, user: AbstractBaseUser) -> list[AwaitingSignoff]:
    """Open sign-off requests whose channel's approver role this user holds and on which they
    have not decided yet; those separation of duties keeps from them are kept, marked."""
    requests = (
        SignoffRequest.objects.filter(status=SignoffRequest.Status.OPEN)
        .exclude(approvals__approver=user)
        .select_related("version__run__created_by", "version__dataset_version", "channel")
        .order_by("created_at")
    )
    awaiting = []
    for request in requests:
        refusal = signoff_refusal(user=user, request=request)
        if refusal is None:
            awaiting.append(AwaitingSignoff(request=request))
        elif isinstance(refusal, SeparationOfDuties):
            awaiting.append(AwaitingSignoff(request=request, not_yours=refusal.message))
        # Otherwise the channel's policy names another role: not this user's inbox.
    return awaiting


@dataclass(frozen=True)
class Release:
    version: ModelVersion
    channel: Channel
    live_version: ModelVersion | None


def releases_ready() -> list[Release]:
    """Approved versions and the channels they were approved for, where they are not live
    yet, with what is live there now."""
    approved = (
        SignoffRequest.objects.filter(
            status=SignoffRequest.Status.APPROVED,
            version__status__in=[ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED],
        )
        .select_related("version", "channel__live_version")
        .order_by("channel__name", "-decided_at")
    )
    seen, releases = set(), []
    for request in approved:
        key = (request.version_id, request.channel_id)
        if key in seen or request.channel.live_version_id == request.version_id:
            continue
        seen.add(key)
        releases.append(
            Release(
                version=request.version,
                channel=request.channel,
                live_version=request.channel.live_version,
            )
        )
    return releases


def _audit_verify_url() -> str:
    try:
        return reverse("training:audit-verify")
    except NoReverseMatch:  # no verification page: the audit log is where to look
        return reverse("training:audit")


def audit_chain_state() -> dict[str, Any]:
    """The published head and the log's size, read without verifying (verification reads the
    whole log: the auditor starts it from the link)."""
    head = AuditHead.objects.filter(pk=1).values("seq", "hash").first()
    return {
        "head_seq": head["seq"] if head else 0,
        "head_hash": head["hash"] if head else "",
        "events": AuditEvent.objects.count(),
        # Events wait up to the sealing lag for their place in the chain (core/audit/sealer.py).
        "unsealed": AuditEvent.objects.filter(seq__isnull=True).count(),
        "verify_url": _audit_verify_url(),
    }


def governance_home_sections(*, user: AbstractBaseUser) -> dict[str, Any]:
    """The approvers', deployers', auditors' and ML engineers' sections of the home page
    (registered with reviews.home_selectors in TrainingAppConfig.ready); each is None when it
    is not for this user."""
    sections: dict[str, Any] = {
        "awaiting_signoff": None,
        "releases": None,
        "audit": None,
        "ml": None,
    }
    awaiting = signoffs_awaiting(user=user)
    if has_role(user, Role.APPROVER) or awaiting:
        sections["awaiting_signoff"] = awaiting
    if can(user, "channel.deploy"):
        sections["releases"] = releases_ready()
    if has_role(user, Role.AUDITOR):
        sections["audit"] = {
            "versions": list(model_versions_list()[:RECENT]),
            "chain": audit_chain_state(),
        }
    if has_role(user, Role.ML_ENGINEER):
        sections["ml"] = {
            "runs": list(training_runs_list()[:RECENT]),
            "datasets": list(dataset_versions_list()[:RECENT]),
            "can_launch": can(user, "training.launch"),
        }
    return sections
