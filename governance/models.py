"""Governance: where versions serve (channels), who signed them off, and every deployment.

The tables keep the names they had in training_app (`db_table`), so an installation upgrades
in place."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Channel(models.Model):
    """Where a model version serves (e.g. staging, production): one live version at a time.

    `policy` holds this channel's overrides of SIGNOFF_GOVERNANCE["DEFAULT_POLICY"]; the
    effective policy is read through `training_app.governance.channel_policy`."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    policy = models.JSONField(default=dict, blank=True, help_text="Overrides of the default.")
    live_version = models.ForeignKey(
        "training_app.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="live_on",
    )
    live_deployment = models.ForeignKey(
        "Deployment", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "training_app_channel"
        ordering = ["name"]
        permissions = [
            ("deploy_channel", "Can deploy and roll back channels"),
            ("approve_model_version", "Can sign off model versions"),
        ]

    def __str__(self) -> str:
        return self.name


class RegressionCase(models.Model):
    """One fixed prompt of a channel's regression set, with its reference answer."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="regression_cases")
    position = models.PositiveIntegerField(default=0)
    prompt = models.TextField()
    reference = models.TextField()

    class Meta:
        db_table = "training_app_regressioncase"
        ordering = ["channel", "position", "id"]

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.position}"


class SignoffRequest(models.Model):
    """A version put forward for release on one channel; approvers decide on it."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    TRANSITIONS = {
        Status.OPEN: {Status.APPROVED, Status.REJECTED},
        Status.APPROVED: set(),
        Status.REJECTED: set(),
    }

    version = models.ForeignKey(
        "training_app.ModelVersion", on_delete=models.PROTECT, related_name="signoff_requests"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="signoff_requests")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    policy = models.JSONField(default=dict, help_text="The channel's policy when requested.")
    live_version = models.ForeignKey(
        "training_app.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version live on the channel when requested (the gate compares with it).",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "training_app_signoffrequest"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["version"], condition=Q(status="open"), name="one_open_signoff_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"sign-off {self.pk} of {self.version_id} for {self.channel_id}"


class Approval(models.Model):
    """One approver's decision on a sign-off request, with the gate as they saw it."""

    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    request = models.ForeignKey(SignoffRequest, on_delete=models.PROTECT, related_name="approvals")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decision = models.CharField(max_length=16, choices=Decision.choices)
    comment = models.TextField()
    override = models.BooleanField(default=False)
    override_reason = models.TextField(blank=True)
    gate = models.JSONField(default=dict, help_text="The regression gate's result at decision.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "training_app_approval"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "approver"], name="one_decision_per_approver"
            )
        ]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver_id} on {self.request_id}"


class Deployment(models.Model):
    """One change of a channel's live version: the channel's history, never edited.

    `previous` is the deployment that was live before this one took effect, so a rollback
    follows it back one step (and a second rollback one more). Rolling back the first release
    of a channel takes it offline: a WITHDRAW row names the version taken off."""

    class Action(models.TextChoices):
        DEPLOY = "deploy", "Deploy"
        ROLLBACK = "rollback", "Rollback"
        WITHDRAW = "withdraw", "Taken offline"

    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="deployments")
    version = models.ForeignKey(
        "training_app.ModelVersion", on_delete=models.PROTECT, related_name="deployments"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    replaced = models.ForeignKey(
        "training_app.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    manifest_digest = models.CharField(max_length=64, help_text="Verified adapter manifest.")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "training_app_deployment"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.version_id} on {self.channel_id}"
