"""Governance API: sign-off, channels (deploy, rollback, generate, what is live), compliance.

One view per operation: validate -> call a service -> serialize."""

from django.http import FileResponse, HttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import allowed
from governance.api.serializers import (
    ChannelOutput,
    CommentInput,
    ComplianceReportOutput,
    DecisionInput,
    DeployInput,
    DeploymentOutput,
    RetireOutput,
    SignoffRequestCreateInput,
    SignoffRequestOutput,
)
from governance.compliance import compliance_archive, compliance_report
from governance.errors import InvalidGovernanceRequest
from governance.models import Channel
from governance.selectors import channel_get, signoff_request_get
from governance.services import (
    channel_deploy,
    channel_rollback,
    model_version_retire,
    signoff_decide,
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


# -- views -------------------------------------------------------------------------------------


class SignoffRequestCreateApi(APIView):
    permission_classes = [allowed("signoff.request")]

    @extend_schema(request=SignoffRequestCreateInput, responses={201: SignoffRequestOutput})
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
            SignoffRequestOutput(signoff_request_get(created.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class SignoffRequestDetailApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=SignoffRequestOutput)
    def get(self, request, pk):
        return Response(SignoffRequestOutput(signoff_request_get(pk)).data)


class SignoffDecideApi(APIView):
    # The policy names the approving role; the service checks it (and separation of duties).
    permission_classes = [allowed("signoff.decide")]

    @extend_schema(request=DecisionInput, responses={201: SignoffRequestOutput})
    def post(self, request, pk):
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        signoff_decide(user=request.user, request=signoff_request_get(pk), **data.validated_data)
        return Response(
            SignoffRequestOutput(signoff_request_get(pk)).data, status=status.HTTP_201_CREATED
        )


class ModelVersionRetireApi(APIView):
    permission_classes = [allowed("version.retire")]

    @extend_schema(request=CommentInput, responses=RetireOutput)
    def post(self, request, version_id):
        data = CommentInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = model_version_retire(
            user=request.user,
            version=model_version_get(version_id=version_id),
            comment=data.validated_data["comment"],
        )
        return Response(RetireOutput(version).data)


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


class ChannelListApi(generics.ListAPIView):
    # Every channel, by name, paginated.
    permission_classes = [allowed("training.view")]
    serializer_class = ChannelOutput

    def get_queryset(self):
        return Channel.objects.select_related("live_version", "live_deployment").order_by("name")

    @extend_schema(operation_id="channels_list")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ChannelDetailApi(APIView):
    """Which version is live, with its adapter files' download URLs and SHA-256 checksums."""

    permission_classes = [allowed("training.view")]

    @extend_schema(responses=ChannelOutput)
    def get(self, request, name):
        return Response(ChannelOutput(channel_get(name), context={"request": request}).data)


class ChannelHistoryApi(generics.ListAPIView):
    # The channel's deployments, newest first, paginated.
    permission_classes = [allowed("training.view")]
    serializer_class = DeploymentOutput

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Channel.objects.none()
        channel = channel_get(self.kwargs["name"])
        return channel.deployments.select_related("version", "replaced", "actor").order_by(
            "-created_at", "-id"
        )

    @extend_schema(operation_id="channels_history_retrieve")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ChannelDeployApi(APIView):
    permission_classes = [allowed("channel.deploy")]

    @extend_schema(request=DeployInput, responses={201: DeploymentOutput})
    def post(self, request, name):
        data = DeployInput(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = channel_deploy(
            user=request.user,
            channel=channel_get(name),
            version=_version_for("version", data.validated_data["version"]),
            comment=data.validated_data["comment"],
        )
        return Response(DeploymentOutput(deployment).data, status=status.HTTP_201_CREATED)


class ChannelRollbackApi(APIView):
    permission_classes = [allowed("channel.deploy")]

    @extend_schema(request=CommentInput, responses={201: DeploymentOutput})
    def post(self, request, name):
        data = CommentInput(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = channel_rollback(
            user=request.user, channel=channel_get(name), comment=data.validated_data["comment"]
        )
        return Response(DeploymentOutput(deployment).data, status=status.HTTP_201_CREATED)


class ComplianceReportApi(APIView):
    permission_classes = [allowed("training.view")]

    @extend_schema(responses=ComplianceReportOutput)
    def get(self, request, version_id):
        report = compliance_report(version=model_version_get(version_id=version_id))
        return Response(ComplianceReportOutput(report).data)


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
