"""Governance pages: sign-off report and decision, channels (deploy, rollback), compliance
report, lineage, and the auditors' audit log. Same services as the API."""

import json
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST, require_safe

from core.errors import ApplicationError
from datasets_app.models import DatasetVersionExample, Example
from governance.compliance import compliance_archive, compliance_report, example_lineage
from governance.models import Channel, SignoffRequest
from governance.policy import channel_policy, lower_is_better
from governance.selectors import signoff_comparisons_progress
from governance.services import (
    can_deploy,
    can_request_signoff,
    channel_deploy,
    channel_rollback,
    model_version_retire,
    signoff_decide,
    signoff_gate,
    signoff_refusal,
    signoff_request_create,
)
from reviews.diffing import word_diff
from reviews.models import Review
from training_app.errors import ModelVersionNotFound
from training_app.models import ModelVersion
from training_app.selectors import can_view_training, model_version_get


def _viewer(request):
    if not can_view_training(request.user):
        raise PermissionDenied(
            "Governance pages are for ML engineers, approvers, deployers, auditors and admins."
        )


def _version(version_id) -> ModelVersion:
    try:
        return model_version_get(version_id=version_id)
    except ModelVersionNotFound as exc:
        raise Http404(exc.message) from exc


def _refuse_or_message(request, exc: ApplicationError) -> None:
    if exc.status_code == 403:
        raise PermissionDenied(exc.message) from exc
    messages.error(request, exc.message)


@login_required
@require_safe
def governance(request, version_id):
    """A version's sign-off requests, and the form to put it forward."""
    _viewer(request)
    version = _version(version_id)
    return render(
        request,
        "training_app/governance.html",
        {
            "version": version,
            "requests": version.signoff_requests.select_related("channel").order_by("-created_at"),
            "channels": Channel.objects.all(),
            "can_request": can_request_signoff(request.user),
        },
    )


@login_required
@require_POST
def signoff_request_new(request, version_id):
    version = _version(version_id)
    channel = Channel.objects.filter(name=request.POST.get("channel", "")).first()
    if channel is None:
        messages.error(request, "Choose a channel.")
        return redirect("training:governance", version_id=version.pk)
    try:
        created = signoff_request_create(
            user=request.user,
            version=version,
            channel=channel,
            comment=request.POST.get("comment", ""),
        )
    except ApplicationError as exc:
        _refuse_or_message(request, exc)
        return redirect("training:governance", version_id=version.pk)
    # The comparisons' progress is on the page, from their state: a flash saying they are
    # running would outlive them.
    messages.success(request, f"Put forward for {channel.name}.")
    return redirect("training:signoff", pk=created.pk)


def _samples_with_diff(evaluation) -> list[dict]:
    rows = []
    for sample in evaluation.samples:
        rows.append(
            {
                **sample,
                "differs": sample.get("candidate") != sample.get("reference"),
                "diff": word_diff(sample.get("reference", ""), sample.get("candidate", "")),
            }
        )
    return rows


@login_required
@require_safe
def signoff_detail(request, pk):
    """The approver's page: the decision panel first (the report is long), then the evaluation
    report and the regression gate, which update themselves while the comparisons run."""
    _viewer(request)
    return render(request, "training_app/signoff.html", _signoff_context(request, pk))


@login_required
@require_safe
def signoff_comparisons(request, pk):
    """The live part of the sign-off page, polled while its comparisons are unfinished."""
    _viewer(request)
    return render(request, "training_app/_signoff_comparisons.html", _signoff_context(request, pk))


def _signoff_context(request, pk) -> dict:
    signoff = get_object_or_404(
        SignoffRequest.objects.select_related(
            "version__run",
            "version__dataset_version",
            "version__parent",
            "channel",
            "live_version",
            "requested_by",
        ),
        pk=pk,
    )
    version = signoff.version
    parent_evaluations = version.evaluations.filter(
        signoff_request__isnull=True, status="done"
    ).select_related("reference")
    evaluations = list(signoff.evaluations.select_related("reference").order_by("created_at"))
    reports = []
    for evaluation in [*parent_evaluations[:1], *evaluations]:
        candidate = evaluation.metrics.get("candidate", {})
        reference = evaluation.metrics.get("reference", {})
        reports.append(
            {
                "evaluation": evaluation,
                "rows": [
                    (name, candidate[name], reference.get(name), lower_is_better(name))
                    for name in candidate
                    if isinstance(candidate[name], (int, float))
                ],
                "samples": _samples_with_diff(evaluation),
            }
        )
    refusal = signoff_refusal(user=request.user, request=signoff)
    decided = signoff.approvals.filter(approver=request.user).exists()
    return {
        "signoff": signoff,
        "version": version,
        "reports": reports,
        "gate": signoff_gate(request=signoff),
        "progress": signoff_comparisons_progress(request=signoff),
        "approvals": signoff.approvals.select_related("approver"),
        "refusal": refusal.message if refusal is not None else "",
        "can_decide": refusal is None and not decided and signoff.status == "open",
        "can_deploy": can_deploy(request.user),
    }


@login_required
@require_POST
def signoff_decision(request, pk):
    signoff = get_object_or_404(SignoffRequest, pk=pk)
    try:
        signoff_decide(
            user=request.user,
            request=signoff,
            decision=request.POST.get("decision", ""),
            comment=request.POST.get("comment", ""),
            override=request.POST.get("override") == "on",
            override_reason=request.POST.get("override_reason", ""),
        )
    except ApplicationError as exc:
        _refuse_or_message(request, exc)
    else:
        messages.success(request, "Decision recorded.")
    return redirect("training:signoff", pk=signoff.pk)


# What other apps add to a channel's page (serving: the "Try it" form and the user's recent
# questions), registered in their AppConfig.ready(): governance does not import them.
ChannelPageExtras = Callable[..., dict[str, Any]]
_CHANNEL_PAGE_EXTRAS: list[ChannelPageExtras] = []


def channel_page_extra(provider: ChannelPageExtras) -> None:
    """Register `provider(user=..., channel=...) -> dict` merged into the channel page's context."""
    if provider not in _CHANNEL_PAGE_EXTRAS:
        _CHANNEL_PAGE_EXTRAS.append(provider)


def channel_page_extras(*, user, channel: Channel) -> dict[str, Any]:
    extras: dict[str, Any] = {"can_try": False, "tries": []}
    for provider in _CHANNEL_PAGE_EXTRAS:
        extras.update(provider(user=user, channel=channel))
    return extras


@login_required
@require_safe
def channel_list(request):
    _viewer(request)
    channels = Channel.objects.select_related("live_version")
    return render(request, "training_app/channels.html", {"channels": channels})


@login_required
@require_safe
def channel_detail(request, name):
    _viewer(request)
    channel = get_object_or_404(
        Channel.objects.select_related("live_version", "live_deployment__previous__version"),
        name=name,
    )
    deployable = (
        ModelVersion.objects.filter(
            status__in=["approved", "deployed"],
            signoff_requests__channel=channel,
            signoff_requests__status="approved",
        )
        .exclude(pk=channel.live_version_id)
        .distinct()
    )
    before = channel.live_deployment.previous if channel.live_deployment else None
    return render(
        request,
        "training_app/channel.html",
        {
            "channel": channel,
            "policy": channel_policy(channel),
            "history": channel.deployments.select_related("version", "replaced", "actor"),
            "cases": channel.regression_cases.all(),
            "deployable": deployable,
            "rollback_to": before.version if before else None,
            # The first release rolls back to nothing: the channel is taken offline.
            "can_withdraw": channel.live_deployment is not None and before is None,
            "can_deploy": can_deploy(request.user),
            **channel_page_extras(user=request.user, channel=channel),
        },
    )


@login_required
@require_POST
def channel_deploy_view(request, name):
    channel = get_object_or_404(Channel, name=name)
    try:
        version = ModelVersion.objects.filter(pk=request.POST.get("version") or None).first()
    except (ValidationError, ValueError):  # not a UUID
        version = None
    if version is None:
        messages.error(request, "Choose a version.")
        return redirect("training:channel", name=name)
    try:
        channel_deploy(
            user=request.user,
            channel=channel,
            version=version,
            comment=request.POST.get("comment", ""),
        )
    except ApplicationError as exc:
        _refuse_or_message(request, exc)
    else:
        messages.success(request, f"{version.name} is live on {channel.name}.")
    return redirect("training:channel", name=name)


@login_required
@require_POST
def channel_rollback_view(request, name):
    channel = get_object_or_404(Channel, name=name)
    try:
        deployment = channel_rollback(
            user=request.user, channel=channel, comment=request.POST.get("comment", "")
        )
    except ApplicationError as exc:
        _refuse_or_message(request, exc)
    else:
        if deployment.action == deployment.Action.WITHDRAW:
            messages.success(
                request, f"Rolled back: {deployment.version.name} is offline; nothing is live."
            )
        else:
            messages.success(request, f"Rolled back: {deployment.version.name} is live again.")
    return redirect("training:channel", name=name)


@login_required
@require_POST
def version_retire(request, version_id):
    version = _version(version_id)
    try:
        model_version_retire(
            user=request.user, version=version, comment=request.POST.get("comment", "")
        )
    except ApplicationError as exc:
        _refuse_or_message(request, exc)
    else:
        messages.success(request, f"{version.name} is retired.")
    return redirect("training:governance", version_id=version.pk)


@login_required
@require_safe
def compliance(request, version_id):
    _viewer(request)
    version = _version(version_id)
    report = compliance_report(version=version)
    if request.GET.get("format") == "json":
        return HttpResponse(
            json.dumps(report, indent=2, sort_keys=True, default=str),
            content_type="application/json",
        )
    return render(request, "training_app/compliance.html", {"report": report, "version": version})


@login_required
@require_safe
def compliance_download(request, version_id):
    _viewer(request)
    version = _version(version_id)
    answer = HttpResponse(compliance_archive(version=version), content_type="application/zip")
    answer["Content-Disposition"] = content_disposition_header(
        True, f"compliance-{version.name}.zip"
    )
    return answer


@login_required
@require_safe
def lineage(request, version_id):
    """From a version to its dataset, examples, their outputs, reviews and reviewers."""
    _viewer(request)
    version = _version(version_id)
    # Reviewers come through each example's output; one query for the whole page, not one a
    # row. An undone decision is no part of the provenance.
    standing_reviews = (
        Review.objects.filter(undone_at__isnull=True)
        .select_related("reviewer")
        .order_by("created_at", "id")
    )
    members = (
        DatasetVersionExample.objects.filter(version=version.dataset_version_id)
        .select_related("example__output")
        .prefetch_related(
            Prefetch("example__output__reviews", standing_reviews, to_attr="standing_reviews")
        )
        .order_by("split", "position")
    )
    page = Paginator(members, 50).get_page(request.GET.get("page"))
    return render(request, "training_app/lineage.html", {"version": version, "page": page})


@login_required
@require_safe
def example_lineage_view(request, example_id):
    """An example back to its original output and reviews, and on to every version using it."""
    _viewer(request)
    example = get_object_or_404(
        Example.objects.select_related("output__routing_rule"), pk=example_id
    )
    return render(
        request,
        "training_app/example_lineage.html",
        {"example": example, **example_lineage(example=example)},
    )
