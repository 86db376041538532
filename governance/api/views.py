"""Governance API: sign-off, channels (deploy, rollback, generate, what is live), compliance.

One view per operation: validate -> call a service -> serialize."""

from django.http import FileResponse, HttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed
from governance.compliance import compliance_archive, compliance_report
from governance.errors import InvalidGovernanceRequest
from governance.models import Channel, Deployment, SignoffRequest
from governance.selectors import channel_get, signoff_request_get
from governance.services import (
    channel_deploy,
    channel_rollback,
    model_version_retire,
    signoff_decide,
    signoff_gate,
    signoff_request_create,
)
from governance.services.deployments import ADAPTER_DOWNLOADS
from training_app.models import ModelVersion
from training_app.selectors import model_version_get


def _version_for(field: str, value) -> ModelVersion:
    try:
        return ModelVersion.objects.get(pk=value)
    except (ModelVersion.DoesNotExist, ValueError) as exc:
        raise InvalidGovernanceRequest(f"{field}: no such model version.", field=field) from exc


# -- serializers -------------------------------------------------------------------------------


class SignoffRequestCreateInput(serializers.Serializer):
    channel = serializers.CharField(max_length=64)
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class DecisionInput(serializers.Serializer):
    # Checked by the service (400 naming the field); a plain string keeps the schema's enum
    # names free of a clash with the review decisions.
    decision = serializers.CharField(help_text="approve or reject")
    comment = serializers.CharField(allow_blank=True, trim_whitespace=True)
    override = serializers.BooleanField(required=False, default=False)
    override_reason = serializers.CharField(required=False, allow_blank=True, default="")


class CommentInput(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class DeployInput(CommentInput):
    version = serializers.UUIDField()


def signoff_request_data(request: SignoffRequest) -> dict:
    approvals = request.approvals.select_related("approver").order_by("created_at")
    return {
        "id": request.pk,
        "version": {"id": str(request.version_id), "name": request.version.name},
        "channel": request.channel.name,
        "status": request.status,
        "policy": request.policy,
        "live_version": request.live_version.name if request.live_version_id else None,
        "requested_by": request.requested_by.get_username(),
        "created_at": request.created_at,
        "decided_at": request.decided_at,
        "gate": signoff_gate(request=request),
        "evaluations": [
            {
                "id": str(e.pk),
                "status": e.status,
                "split": e.split,
                "against": e.reference_label,
                "metrics": e.metrics,
                "samples": e.samples,
                "failure_reason": e.failure_reason,
            }
            for e in request.evaluations.select_related("reference").order_by("created_at")
        ],
        "approvals": [
            {
                "approver": a.approver.get_username(),
                "decision": a.decision,
                "comment": a.comment,
                "override": a.override,
                "override_reason": a.override_reason,
                "created_at": a.created_at,
            }
            for a in approvals
        ],
    }


def deployment_data(d: Deployment) -> dict:
    return {
        "id": d.pk,
        "action": d.action,
        "version": {"id": str(d.version_id), "name": d.version.name},
        "replaced": d.replaced.name if d.replaced_id else None,
        "by": d.actor.get_username(),
        "comment": d.comment,
        "manifest_digest": d.manifest_digest,
        "created_at": d.created_at,
    }


def channel_data(channel: Channel, request) -> dict:
    from governance.policy import channel_policy

    version = channel.live_version
    live = None
    if version is not None:
        live = {
            "id": str(version.pk),
            "name": version.name,
            "status": version.status,
            "base_model": version.base_model_ref,
            "adapter": {
                "format": "peft LoRA (safetensors)",
                "config": version.config.get("hyperparameters", {}),
                "files": [
                    {
                        "name": name,
                        "sha256": digest,
                        "url": request.build_absolute_uri(
                            reverse("api-model-version-file", args=[version.pk, name])
                        ),
                    }
                    for name, digest in sorted(version.manifest.items())
                    if name in ADAPTER_DOWNLOADS
                ],
            },
            "deployed_at": channel.live_deployment.created_at if channel.live_deployment else None,
        }
    return {
        "name": channel.name,
        "description": channel.description,
        "policy": channel_policy(channel),
        "regression_cases": channel.regression_cases.count(),
        "live": live,
    }


# -- views -------------------------------------------------------------------------------------


class SignoffRequestCreateApi(APIView):
    permission_classes = [allowed("signoff.request")]

    @extend_schema(request=SignoffRequestCreateInput, responses={201: dict})
    def post(self, request, version_id):
        data = SignoffRequestCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            channel = Channel.objects.get(name=data.validated_data["channel"])
        except Channel.DoesNotExist as exc:
            raise InvalidGovernanceRequest("channel: no such channel.", field="channel") from exc
        created = signoff_request_create(
            user=request.user,
            version=model_version_get(version_id=version_id),
            channel=channel,
            comment=data.validated_data["comment"],
        )
        return Response(
            signoff_request_data(signoff_request_get(created.pk)), status=status.HTTP_201_CREATED
        )


class SignoffRequestDetailApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=dict)
    def get(self, request, pk):
        return Response(signoff_request_data(signoff_request_get(pk)))


class SignoffDecideApi(APIView):
    # The policy names the approving role; the service checks it (and separation of duties).
    permission_classes = [allowed("signoff.decide")]

    @extend_schema(request=DecisionInput, responses={201: dict})
    def post(self, request, pk):
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        signoff_decide(user=request.user, request=signoff_request_get(pk), **data.validated_data)
        return Response(
            signoff_request_data(signoff_request_get(pk)), status=status.HTTP_201_CREATED
        )


class ModelVersionRetireApi(APIView):
    permission_classes = [allowed("version.retire")]

    @extend_schema(request=CommentInput, responses=dict)
    def post(self, request, version_id):
        data = CommentInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = model_version_retire(
            user=request.user,
            version=model_version_get(version_id=version_id),
            comment=data.validated_data["comment"],
        )
        return Response({"id": str(version.pk), "status": version.status})


class ModelVersionFileApi(APIView):
    """The adapter files an external serving stack downloads (checksums in the channel view)."""

    permission_classes = [allowed("training.view")]

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY)}
    )
    def get(self, request, version_id, filename):
        from pathlib import Path

        from training_app.errors import ModelVersionNotFound

        version = model_version_get(version_id=version_id)
        if filename not in ADAPTER_DOWNLOADS or filename not in version.manifest:
            raise ModelVersionNotFound(f"{version.name} has no file {filename}.")
        path = Path(version.artifact_dir) / filename
        if not path.is_file():
            raise ModelVersionNotFound(f"{filename} of {version.name} is missing on disk.")
        answer = FileResponse(path.open("rb"), as_attachment=True, filename=filename)
        answer["X-Checksum-SHA256"] = version.manifest[filename]
        return answer


class ChannelListApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=dict, operation_id="channels_list")
    def get(self, request):
        channels = Channel.objects.select_related("live_version", "live_deployment")
        return Response([channel_data(c, request) for c in channels])


class ChannelDetailApi(APIView):
    """Which version is live, with its adapter files' download URLs and SHA-256 checksums."""

    permission_classes = [allowed("training.view")]

    @extend_schema(responses=dict)
    def get(self, request, name):
        return Response(channel_data(channel_get(name), request))


class ChannelHistoryApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=dict)
    def get(self, request, name):
        channel = channel_get(name)
        rows = channel.deployments.select_related("version", "replaced", "actor")
        return Response([deployment_data(d) for d in rows])


class ChannelDeployApi(APIView):
    permission_classes = [allowed("channel.deploy")]

    @extend_schema(request=DeployInput, responses={201: dict})
    def post(self, request, name):
        data = DeployInput(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = channel_deploy(
            user=request.user,
            channel=channel_get(name),
            version=_version_for("version", data.validated_data["version"]),
            comment=data.validated_data["comment"],
        )
        return Response(deployment_data(deployment), status=status.HTTP_201_CREATED)


class ChannelRollbackApi(APIView):
    permission_classes = [allowed("channel.deploy")]

    @extend_schema(request=CommentInput, responses={201: dict})
    def post(self, request, name):
        data = CommentInput(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = channel_rollback(
            user=request.user, channel=channel_get(name), comment=data.validated_data["comment"]
        )
        return Response(deployment_data(deployment), status=status.HTTP_201_CREATED)


class ComplianceReportApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=dict)
    def get(self, request, version_id):
        return Response(compliance_report(version=model_version_get(version_id=version_id)))


class ComplianceArchiveApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY)})
    def get(self, request, version_id):
        version = model_version_get(version_id=version_id)
        answer = HttpResponse(compliance_archive(version=version), content_type="application/zip")
        answer["Content-Disposition"] = content_disposition_header(
            True, f"compliance-{version.name}.zip"
        )
        return answer
