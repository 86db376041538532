"""Governance API input and output serializers.

The outputs write what the hand-made dicts they replaced wrote (tests/test_api_serializers.py
keeps those dicts and compares): the same keys in the same order, and datetimes as DRF writes
them (`Z`). The regression gate and the compliance report's sections are computed documents
described elsewhere (docs/governance.md); they stay JSON objects here."""

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance.models import Channel, Deployment, SignoffRequest
from governance.services import signoff_gate
from governance.services.deployments import ADAPTER_DOWNLOADS

# -- inputs ------------------------------------------------------------------------------------


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


# -- outputs -----------------------------------------------------------------------------------


class VersionRefOutput(serializers.Serializer):
    """A model version named in another object's answer."""

    id = serializers.UUIDField()
    name = serializers.CharField()


class SignoffEvaluationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    split = serializers.CharField(help_text="eval or regression")
    against = serializers.CharField(source="reference_label")
    metrics = serializers.DictField()
    samples = serializers.JSONField()
    failure_reason = serializers.CharField()


class ApprovalOutput(serializers.Serializer):
    approver = serializers.CharField(source="approver.get_username")
    decision = serializers.CharField(help_text="approve or reject")
    comment = serializers.CharField()
    override = serializers.BooleanField()
    override_reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class SignoffRequestOutput(serializers.Serializer):
    id = serializers.IntegerField()
    version = VersionRefOutput()
    channel = serializers.CharField(source="channel.name")
    status = serializers.CharField(help_text="open, approved or rejected")
    policy = serializers.DictField(help_text="The channel's policy when requested.")
    live_version = serializers.SerializerMethodField()
    requested_by = serializers.CharField(source="requested_by.get_username")
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    gate = serializers.SerializerMethodField(
        help_text="The regression gate now: checks, tolerances, pending evaluations, passed."
    )
    evaluations = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()

    def get_live_version(self, request: SignoffRequest) -> str | None:
        return request.live_version.name if request.live_version_id else None

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_gate(self, request: SignoffRequest) -> dict[str, Any]:
        return signoff_gate(request=request)

    @extend_schema_field(SignoffEvaluationOutput(many=True))
    def get_evaluations(self, request: SignoffRequest) -> list:
        rows = request.evaluations.select_related("reference").order_by("created_at")
        return SignoffEvaluationOutput(rows, many=True).data

    @extend_schema_field(ApprovalOutput(many=True))
    def get_approvals(self, request: SignoffRequest) -> list:
        rows = request.approvals.select_related("approver").order_by("created_at")
        return ApprovalOutput(rows, many=True).data


class DeploymentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.CharField(help_text="deploy, rollback or withdraw")
    version = VersionRefOutput()
    replaced = serializers.SerializerMethodField(help_text="The version it took the place of.")
    by = serializers.CharField(source="actor.get_username")
    comment = serializers.CharField()
    manifest_digest = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_replaced(self, deployment: Deployment) -> str | None:
        return deployment.replaced.name if deployment.replaced_id else None


class AdapterFileOutput(serializers.Serializer):
    name = serializers.CharField()
    sha256 = serializers.CharField()
    url = serializers.URLField(help_text="GET it (answers X-Checksum-SHA256).")


class AdapterOutput(serializers.Serializer):
    format = serializers.CharField()
    config = serializers.DictField(help_text="The training run's hyperparameters.")
    files = AdapterFileOutput(many=True)


class LiveVersionOutput(serializers.Serializer):
    """What a channel serves (given the channel), with what an external serving stack needs
    to fetch it."""

    id = serializers.UUIDField(source="live_version.pk")
    name = serializers.CharField(source="live_version.name")
    status = serializers.CharField(source="live_version.status")
    base_model = serializers.DictField(source="live_version.base_model_ref")
    adapter = serializers.SerializerMethodField()
    deployed_at = serializers.SerializerMethodField()

    @extend_schema_field(AdapterOutput)
    def get_adapter(self, channel: Channel) -> dict[str, Any]:
        version = channel.live_version
        request = self.context["request"]
        files = [
            {
                "name": name,
                "sha256": digest,
                "url": request.build_absolute_uri(
                    reverse("api-model-version-file", args=[version.pk, name])
                ),
            }
            for name, digest in sorted(version.manifest.items())
            if name in ADAPTER_DOWNLOADS
        ]
        adapter = {
            "format": "peft LoRA (safetensors)",
            "config": version.config.get("hyperparameters", {}),
            "files": files,
        }
        return AdapterOutput(adapter).data

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_deployed_at(self, channel: Channel) -> str | None:
        if channel.live_deployment is None:
            return None
        return serializers.DateTimeField().to_representation(channel.live_deployment.created_at)


class ChannelOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    policy = serializers.SerializerMethodField(help_text="The channel's sign-off policy.")
    regression_cases = serializers.SerializerMethodField()
    live = serializers.SerializerMethodField(help_text="Null when nothing is live.")

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_policy(self, channel: Channel) -> dict[str, Any]:
        from governance.policy import channel_policy

        return channel_policy(channel)

    def get_regression_cases(self, channel: Channel) -> int:
        return channel.regression_cases.count()

    @extend_schema_field(LiveVersionOutput(allow_null=True))
    def get_live(self, channel: Channel) -> dict[str, Any] | None:
        if channel.live_version is None:
            return None
        return LiveVersionOutput(channel, context=self.context).data


class RetireOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()


class ComplianceReportOutput(serializers.Serializer):
    """The report's sections, in this order; docs/governance.md describes each."""

    header = serializers.DictField(help_text="title, generated_at, sections, framework_map")
    identity = serializers.DictField()
    base_model = serializers.DictField()
    training = serializers.DictField()
    dataset = serializers.DictField()
    examples = serializers.DictField()
    reviewers = serializers.ListField(child=serializers.DictField())
    agreement = serializers.DictField()
    evaluations = serializers.ListField(child=serializers.DictField())
    approvals = serializers.ListField(child=serializers.DictField())
    deployments = serializers.ListField(child=serializers.DictField())
    audit_chain = serializers.DictField()
    monitoring = serializers.DictField()
