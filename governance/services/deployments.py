"""Channels: deploy an approved version, roll back one step, retire versions; every change of
a channel's live version is a Deployment row and an audit event, in one transaction.

The adapter's files are hashed before the transaction (file reads stay out of it) and
compared with the version's manifest: a tampered artifact never goes live.

What answers for a live version (the embedded model server, or inference engines) is serving's
concern, and governance may not import serving: serving registers a `ServingHook` here
(serving/apps.py). Its `prepare` runs after the artifact checks out and before the transaction
(network calls stay out of it and may refuse: the deployment is then not recorded, the refusal
is audited); if the transaction then fails, `release` undoes it. A version that stops being
live is released after commit, best effort: one left loaded answers nobody (only Signoff holds
the engines' key and it asks live versions only) and serving's maintenance step takes it out."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit_append
from core.errors import ApplicationError
from core.events import event_publish
from core.permissions import can, require
from governance.errors import GovernanceForbidden, InvalidGovernanceRequest
from governance.models import Channel, Deployment, RegressionCase, SignoffRequest
from governance.policy import validate_policy
from training_app.errors import ArtifactTampered, TransitionRefused
from training_app.models import ModelVersion
from training_app.services.versions import (
    artifact_verify,
    manifest_digest,
    model_version_transition,
)

LIVE_STATUSES = {ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED}
# What an external serving stack needs of a version: the adapter and its config.
ADAPTER_DOWNLOADS = ("adapter_model.safetensors", "adapter_config.json")


def can_deploy(user: AbstractBaseUser) -> bool:
    return can(user, "channel.deploy")


@dataclass(frozen=True)
class ServingHook:
    """`prepare(version)`: make the version answerable; returns a report for the audit event
    (e.g. which engines loaded it) or raises an ApplicationError to refuse the deployment.
    `release(version)`: take it out where it is live nowhere; never raises."""

    key: str
    prepare: Callable[[ModelVersion], dict[str, Any]]
    release: Callable[[ModelVersion], dict[str, Any]]


deployment_backend_hooks: dict[str, ServingHook] = {}


def deployment_backend_register(hook: ServingHook) -> None:
    deployment_backend_hooks[hook.key] = hook


def _serving_prepare(
    *, user: AbstractBaseUser, channel: Channel, version: ModelVersion, action: str
) -> dict[str, Any]:
    """Every hook's `prepare`; a refusal is audited (in its own transaction: nothing else is
    written) and re-raised, after releasing what earlier hooks prepared."""
    reports: dict[str, Any] = {}
    done: list[ServingHook] = []
    for hook in deployment_backend_hooks.values():
        try:
            report = hook.prepare(version)
        except ApplicationError as exc:
            _serving_release(version, hooks=done)
            with transaction.atomic():
                audit_append(
                    actor=user,
                    action="channel.deploy_refused",
                    object_type="channel",
                    object_id=channel.name,
                    payload={
                        "action": action,
                        "version": str(version.pk),
                        "version_name": version.name,
                        "reason": exc.message,
                        "code": exc.code,
                        **exc.extra,
                    },
                )
            raise
        done.append(hook)
        if report:
            reports[hook.key] = report
    return reports


def _serving_release(
    version: ModelVersion | None, *, hooks: list[ServingHook] | None = None
) -> None:
    if version is None:
        return
    for hook in deployment_backend_hooks.values() if hooks is None else hooks:
        hook.release(version)


def _release_on_commit(version: ModelVersion | None) -> None:
    if version is not None:
        transaction.on_commit(lambda: _serving_release(version))


def _go_live(
    *,
    channel: Channel,
    version: ModelVersion,
    action: str,
    previous: Deployment | None,
    actor: AbstractBaseUser,
    comment: str,
    digest: str,
    serving: dict[str, Any] | None = None,
) -> Deployment:
    """Point `channel` at `version` (channel row locked by the caller)."""
    replaced = channel.live_version
    deployment = Deployment.objects.create(
        channel=channel,
        version=version,
        action=action,
        replaced=replaced,
        previous=previous,
        manifest_digest=digest,
        actor=actor,
        comment=comment,
    )
    Channel.objects.filter(pk=channel.pk).update(live_version=version, live_deployment=deployment)
    channel.live_version, channel.live_deployment = version, deployment
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    model_version_transition(
        version=version,
        to=ModelVersion.Status.DEPLOYED,
        actor=actor,
        payload={"channel": channel.name, "action": action, "deployment": deployment.pk},
    )
    if replaced is not None and replaced.pk != version.pk:
        replaced = ModelVersion.objects.select_for_update().get(pk=replaced.pk)
        still_live = Channel.objects.filter(live_version=replaced).exists()
        if replaced.status == ModelVersion.Status.DEPLOYED and not still_live:
            model_version_transition(
                version=replaced,
                to=ModelVersion.Status.APPROVED,
                actor=actor,
                payload={"channel": channel.name, "replaced_by": str(version.pk)},
            )
    event_publish(
        event="channel.deployed" if action == Deployment.Action.DEPLOY else "channel.rolled_back",
        payload={
            "channel": channel.name,
            "version": str(version.pk),
            "version_name": version.name,
            "replaced": str(replaced.pk) if replaced else None,
            "deployment": deployment.pk,
        },
    )
    audit_append(
        actor=actor,
        action=f"channel.{action}",
        object_type="channel",
        object_id=channel.name,
        payload={
            "deployment": deployment.pk,
            "version": str(version.pk),
            "version_name": version.name,
            "replaced": str(replaced.pk) if replaced else None,
            "manifest_digest": digest,
            "comment": comment,
            **({"serving": serving} if serving else {}),
        },
    )
    if replaced is not None and replaced.pk != version.pk:
        _release_on_commit(replaced)
    return deployment


def channel_deploy(
    *, user: AbstractBaseUser, channel: Channel, version: ModelVersion, comment: str = ""
) -> Deployment:
    """Make an approved version live on `channel`, once its artifact checks out."""
    if not can_deploy(user):
        raise GovernanceForbidden("Only deployers deploy.")
    digest = artifact_verify(version=version)
    # Checked before the engines are asked (so a refused deployment loads nothing), and again
    # under the lock, which decides.
    _deploy_refusal(channel=Channel.objects.get(pk=channel.pk), version=version, digest=digest)
    serving = _serving_prepare(user=user, channel=channel, version=version, action="deploy")
    try:
        with transaction.atomic():
            # Locked: two deployments to one channel at once would both record the same previous.
            channel = (
                Channel.objects.select_for_update(of=("self",))
                .select_related("live_version")
                .get(pk=channel.pk)
            )
            version = ModelVersion.objects.get(pk=version.pk)
            _deploy_refusal(channel=channel, version=version, digest=digest)
            return _go_live(
                channel=channel,
                version=version,
                action=Deployment.Action.DEPLOY,
                previous=channel.live_deployment,
                actor=user,
                comment=comment.strip(),
                digest=digest,
                serving=serving,
            )
    except BaseException:
        _serving_release(version)  # the hooks leave it alone if it is live on another channel
        raise


def _deploy_refusal(*, channel: Channel, version: ModelVersion, digest: str) -> None:
    version = ModelVersion.objects.get(pk=version.pk)
    if version.status not in LIVE_STATUSES:
        raise TransitionRefused(
            f"Model version {version.name} is {version.status}: only approved versions "
            "are deployed."
        )
    if not SignoffRequest.objects.filter(
        version=version, channel=channel, status=SignoffRequest.Status.APPROVED
    ).exists():
        raise TransitionRefused(f"{version.name} has not been signed off for {channel.name}.")
    if channel.live_version_id == version.pk:
        raise TransitionRefused(f"{version.name} is already live on {channel.name}.")
    if digest != manifest_digest(version.manifest):
        raise ArtifactTampered(f"The manifest of {version.name} changed while deploying.")


def channel_rollback(*, user: AbstractBaseUser, channel: Channel, comment: str = "") -> Deployment:
    """Return `channel` to the version it had before its current one, in one action; when
    nothing came before (its first release), take the channel offline instead."""
    if not can_deploy(user):
        raise GovernanceForbidden("Only deployers roll channels back.")
    current = Channel.objects.select_related("live_deployment__previous__version").get(
        pk=channel.pk
    )
    if current.live_deployment is None:
        raise TransitionRefused(f"{channel.name} has nothing live to roll back.")
    before = current.live_deployment.previous
    if before is None:
        return _withdraw(
            channel=channel, seen=current.live_deployment_id, user=user, comment=comment
        )
    digest = artifact_verify(version=before.version)
    if before.version.status not in LIVE_STATUSES:
        raise TransitionRefused(
            f"The earlier version {before.version.name} is {before.version.status}: it cannot "
            "go live."
        )
    serving = _serving_prepare(
        user=user, channel=channel, version=before.version, action="rollback"
    )
    try:
        with transaction.atomic():
            channel = (
                Channel.objects.select_for_update(of=("self",))
                .select_related("live_version")
                .get(pk=channel.pk)
            )
            if channel.live_deployment_id != current.live_deployment_id:
                raise TransitionRefused(f"{channel.name} changed while rolling back: look again.")
            target = ModelVersion.objects.get(pk=before.version_id)
            if target.status not in LIVE_STATUSES:
                raise TransitionRefused(
                    f"The earlier version {target.name} is {target.status}: it cannot go live."
                )
            return _go_live(
                channel=channel,
                version=target,
                action=Deployment.Action.ROLLBACK,
                previous=before.previous,
                actor=user,
                comment=comment.strip(),
                digest=digest,
                serving=serving,
            )
    except BaseException:
        _serving_release(before.version)
        raise


def _withdraw(*, channel: Channel, seen: int, user: AbstractBaseUser, comment: str) -> Deployment:
    """Take the channel's only release offline: it serves nothing until the next deploy."""
    with transaction.atomic():
        channel = (
            Channel.objects.select_for_update(of=("self",))
            .select_related("live_version")
            .get(pk=channel.pk)
        )
        if channel.live_deployment_id != seen:
            raise TransitionRefused(f"{channel.name} changed while rolling back: look again.")
        withdrawn = ModelVersion.objects.select_for_update().get(pk=channel.live_version_id)
        deployment = Deployment.objects.create(
            channel=channel,
            version=withdrawn,
            action=Deployment.Action.WITHDRAW,
            replaced=withdrawn,
            previous=None,
            manifest_digest="",
            actor=user,
            comment=comment.strip(),
        )
        Channel.objects.filter(pk=channel.pk).update(live_version=None, live_deployment=None)
        channel.live_version, channel.live_deployment = None, None
        still_live = Channel.objects.filter(live_version=withdrawn).exists()
        if withdrawn.status == ModelVersion.Status.DEPLOYED and not still_live:
            model_version_transition(
                version=withdrawn,
                to=ModelVersion.Status.APPROVED,
                actor=user,
                payload={"channel": channel.name, "withdrawn": True},
            )
        event_publish(
            event="channel.rolled_back",
            payload={
                "channel": channel.name,
                "version": None,
                "version_name": None,
                "replaced": str(withdrawn.pk),
                "deployment": deployment.pk,
            },
        )
        audit_append(
            actor=user,
            action="channel.withdraw",
            object_type="channel",
            object_id=channel.name,
            payload={
                "deployment": deployment.pk,
                "version": None,
                "withdrawn": str(withdrawn.pk),
                "version_name": withdrawn.name,
                "comment": comment.strip(),
            },
        )
        _release_on_commit(withdrawn)
    return deployment


def model_version_retire(
    *, user: AbstractBaseUser, version: ModelVersion, comment: str
) -> ModelVersion:
    """Retire an approved version that no channel serves; it can never go live again."""
    require(
        user, "version.retire", GovernanceForbidden("Only deployers and admins retire versions.")
    )
    comment = (comment or "").strip()
    if not comment:
        raise InvalidGovernanceRequest("Retiring needs a comment.", field="comment")
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        live_on = list(Channel.objects.filter(live_version=version).values_list("name", flat=True))
        if live_on:
            raise TransitionRefused(
                f"{version.name} is live on {', '.join(live_on)}: deploy another version first."
            )
        retired = model_version_transition(
            version=version,
            to=ModelVersion.Status.RETIRED,
            actor=user,
            payload={"comment": comment},
        )
        # Normally taken out when it stopped being live; this catches one an engine kept.
        _release_on_commit(retired)
        return retired


def channel_save(
    *,
    user: AbstractBaseUser | None,
    name: str,
    description: str = "",
    policy: dict[str, Any] | None = None,
    regression_set: list[dict[str, str]] | None = None,
) -> Channel:
    """Create or update a channel, its policy overrides and its regression set (admins)."""
    if user is not None and not can(user, "channel.configure"):
        raise GovernanceForbidden("Only admins configure channels.")
    from django.utils.text import slugify

    if not name or slugify(name) != name or len(name) > 64:
        raise InvalidGovernanceRequest("A channel name is a slug.", field="name")
    policy = policy or {}
    problem = validate_policy(policy)
    if problem:
        raise InvalidGovernanceRequest(f"{problem[0]}: {problem[1]}", field=problem[0])
    cases = regression_set if regression_set is not None else None
    if cases is not None:
        for index, case in enumerate(cases):
            if not isinstance(case, dict) or not all(
                isinstance(case.get(key), str) and case[key].strip()
                for key in ("prompt", "reference")
            ):
                raise InvalidGovernanceRequest(
                    "Each case needs a prompt and a reference answer.",
                    field=f"regression_set[{index}]",
                )
    with transaction.atomic():
        channel, created = Channel.objects.select_for_update().get_or_create(
            name=name, defaults={"description": description, "policy": policy}
        )
        if not created:
            channel.description, channel.policy = description, policy
            channel.save(update_fields=["description", "policy"])
        if cases is not None:
            RegressionCase.objects.filter(channel=channel).delete()
            RegressionCase.objects.bulk_create(
                RegressionCase(
                    channel=channel, position=i, prompt=c["prompt"], reference=c["reference"]
                )
                for i, c in enumerate(cases)
            )
        audit_append(
            actor=user,
            action="channel.create" if created else "channel.update",
            object_type="channel",
            object_id=name,
            payload={
                "description": description,
                "policy": policy,
                "regression_cases": len(cases) if cases is not None else None,
            },
        )
    return channel
