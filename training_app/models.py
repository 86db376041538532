"""Base models, training runs, model versions and their evaluations.

Writes go through `training_app.services`; these classes hold fields, constraints, the status
transition tables and tiny properties.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class BaseModel(models.Model):
    """A registered base model: a local folder of safetensors weights, fingerprinted."""

    name = models.SlugField(max_length=100, unique=True)
    folder = models.CharField(max_length=500, help_text="Local folder (safetensors only).")
    hub_id = models.CharField(max_length=200, blank=True, help_text="Where it came from.")
    revision = models.CharField(max_length=100, blank=True)
    weight_sha256 = models.JSONField(default=dict, help_text="{weight file: SHA-256}.")
    architecture = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def reference(self) -> dict:
        """What a model version records about its base, instead of peft's absolute path."""
        return {
            "name": self.name,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "weight_sha256": self.weight_sha256,
        }


class TrainingRun(models.Model):
    """One execution of fine-tuning, leased by one worker at a time."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # Allowed status moves; enforced by services.runs._run_transition. RUNNING -> QUEUED is the
    # sweeper taking a run back from a worker whose heartbeat went stale.
    TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
        Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
        Status.CANCELLED: set(),
    }
    ACTIVE = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion", on_delete=models.PROTECT, related_name="training_runs"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="runs")
    parent_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="child_runs"
    )
    hyperparameters = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="training_runs"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # The lease: who trains it now, and when they last showed signs of life.
    lease_owner = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # The broker message that should carry the run to a worker, and when it was sent: the
    # sweeper sends it again if Redis lost it. Empty: a caller runs it without the broker.
    message_id = models.CharField(max_length=64, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    progress = models.JSONField(
        default=dict, blank=True, help_text="{step, total_steps, loss, lr, tokens_per_s, eta_s}."
    )
    loss_history = models.JSONField(default=list, blank=True, help_text="[[step, loss], ...]")
    eval_history = models.JSONField(default=list, blank=True, help_text="[{step, eval_loss}]")
    log_tail = models.TextField(blank=True)
    work_dir = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("launch_training", "Can launch and cancel training runs")]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat")]

    def __str__(self) -> str:
        return f"run {self.id}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def percent(self) -> int:
        total = self.progress.get("total_steps") or 0
        return int(100 * (self.progress.get("step") or 0) / total) if total else 0


class ModelVersion(models.Model):
    """A fine-tuned adapter on a base model, from training to retirement (issue 5 and 6)."""

    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        TRAINED = "trained", "Trained"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        EVALUATED = "evaluated", "Evaluated"
        AWAITING_SIGNOFF = "awaiting_signoff", "Awaiting sign-off"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        DEPLOYED = "deployed", "Deployed"
        RETIRED = "retired", "Retired"

    # The whole lifecycle, in one place; enforced by services.versions.model_version_transition.
    # A failed or cancelled version never moves again: it is never releasable.
    TRANSITIONS = {
        Status.TRAINING: {Status.TRAINED, Status.FAILED, Status.CANCELLED},
        Status.TRAINED: {Status.EVALUATED},
        Status.FAILED: set(),
        Status.CANCELLED: set(),
        # Re-evaluating (e.g. against a newer live version) keeps it evaluated.
        Status.EVALUATED: {Status.EVALUATED, Status.AWAITING_SIGNOFF},
        Status.AWAITING_SIGNOFF: {Status.APPROVED, Status.REJECTED},
        # Put forward again for another channel's sign-off, an approved or deployed version
        # keeps its status; the request carries the channel's decision.
        Status.APPROVED: {Status.DEPLOYED, Status.RETIRED},
        Status.REJECTED: set(),
        # Deployed on a further channel stays deployed; taken off its last channel (replaced
        # or rolled back) it is approved again, so a rollback can return to it.
        Status.DEPLOYED: {Status.DEPLOYED, Status.APPROVED, Status.RETIRED},
        Status.RETIRED: set(),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.TRAINING)
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="model_version")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="versions")
    base_model_ref = models.JSONField(
        default=dict, help_text="Name, revision and weight hashes of the base (peft stores a path)."
    )
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion", on_delete=models.PROTECT, related_name="model_versions"
    )
    config = models.JSONField(default=dict, help_text="Full training configuration.")
    environment = models.JSONField(default=dict, help_text="Libraries, device, project commit.")
    artifact_dir = models.CharField(max_length=500, blank=True)
    manifest = models.JSONField(default=dict, blank=True, help_text="{file: SHA-256}.")
    metrics = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="model_versions"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    trained_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("evaluate_model_version", "Can request model version evaluations")]

    def __str__(self) -> str:
        return self.name


class Evaluation(models.Model):
    """A candidate version against a reference (its parent, or the bare base model)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.FAILED},
        Status.RUNNING: {Status.DONE, Status.FAILED, Status.QUEUED},
        Status.DONE: set(),
        Status.FAILED: set(),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    reference = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: the bare base model.",
    )
    dataset_version = models.ForeignKey(
        "datasets_app.DatasetVersion", on_delete=models.PROTECT, related_name="+"
    )
    split = models.CharField(max_length=16, default="eval", help_text="eval or regression.")
    channel = models.ForeignKey(
        "Channel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The channel whose regression set (split regression) or live version it used.",
    )
    signoff_request = models.ForeignKey(
        "SignoffRequest",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="evaluations",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # The same lease and lost-message bookkeeping as TrainingRun's.
    lease_owner = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    message_id = models.CharField(max_length=64, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(
        default=dict, blank=True, help_text="{candidate: {...}, reference: {...}}"
    )
    samples = models.JSONField(default=list, blank=True, help_text="Side-by-side generations.")
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(reference=models.F("version")), name="evaluation_not_against_itself"
            )
        ]

    def __str__(self) -> str:
        return f"evaluation {self.id} of {self.version_id}"

    @property
    def reference_label(self) -> str:
        return self.reference.name if self.reference_id else "base model"


class Channel(models.Model):
    """Where a model version serves (e.g. staging, production): one live version at a time.

    `policy` holds this channel's overrides of SIGNOFF_GOVERNANCE["DEFAULT_POLICY"]; the
    effective policy is read through `training_app.governance.channel_policy`."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    policy = models.JSONField(default=dict, blank=True, help_text="Overrides of the default.")
    live_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="live_on"
    )
    live_deployment = models.ForeignKey(
        "Deployment", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
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
        ModelVersion, on_delete=models.PROTECT, related_name="signoff_requests"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="signoff_requests")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    policy = models.JSONField(default=dict, help_text="The channel's policy when requested.")
    live_version = models.ForeignKey(
        ModelVersion,
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
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    action = models.CharField(max_length=16, choices=Action.choices)
    replaced = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    manifest_digest = models.CharField(max_length=64, help_text="Verified adapter manifest.")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.version_id} on {self.channel_id}"


# -- monitoring after release (issue 7) --------------------------------------------------------


class ChannelMonitoring(models.Model):
    """A channel's audit sample and drift thresholds (defaults: SIGNOFF_MONITORING).

    The sample itself is two routing rules owned by this row: `audit_rule` sends
    `audit_sample_rate` of the channel's outputs (source `channel:<name>`) to `audit_queue`,
    and `accept_rule` auto-accepts the rest, so routing stays the only place that decides."""

    channel = models.OneToOneField(Channel, on_delete=models.CASCADE, related_name="monitoring")
    audit_sample_rate = models.FloatField(default=0.0)
    audit_queue = models.ForeignKey(
        "reviews.Queue", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    audit_rule = models.ForeignKey(
        "reviews.RoutingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accept_rule = models.ForeignKey(
        "reviews.RoutingRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    margin = models.FloatField(null=True, blank=True, help_text="Empty: the default margin.")
    min_samples = models.PositiveIntegerField(null=True, blank=True)
    baseline = models.JSONField(
        default=dict, blank=True, help_text="{correction|rejection: rate} overriding the default."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring of {self.channel_id}"


class DriftAlert(models.Model):
    """A live version's correction or rejection rate rose above its baseline: raised once per
    (version, channel, metric); the unique constraint is the guard against a second one."""

    class Metric(models.TextChoices):
        CORRECTION = "correction", "Correction rate"
        REJECTION = "rejection", "Rejection rate"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"

    TRANSITIONS = {Status.OPEN: {Status.ACKNOWLEDGED}, Status.ACKNOWLEDGED: set()}

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="drift_alerts")
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="drift_alerts")
    metric = models.CharField(max_length=16, choices=Metric.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    baseline = models.FloatField()
    baseline_source = models.CharField(max_length=32)
    observed = models.FloatField()
    ci_low = models.FloatField()
    ci_high = models.FloatField()
    margin = models.FloatField()
    samples = models.PositiveIntegerField()
    window_start = models.DateTimeField()
    raised_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    retrain_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "channel", "metric"], name="one_drift_alert_per_metric"
            )
        ]

    def __str__(self) -> str:
        return f"{self.metric} drift of {self.version_id} on {self.channel_id}"


class Webhook(models.Model):
    """An HTTP callback for lifecycle events, signed with HMAC-SHA256 over `timestamp.body`."""

    class Event(models.TextChoices):
        AWAITING_SIGNOFF = "version.awaiting_signoff", "Version awaiting sign-off"
        APPROVED = "version.approved", "Version approved"
        DEPLOYED = "channel.deployed", "Version deployed"
        ROLLED_BACK = "channel.rolled_back", "Channel rolled back"
        DRIFT_ALERT = "drift.alert", "Drift alert"

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    events = models.JSONField(default=list, help_text="Event names; empty: none.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One event for one webhook, and what happened to each attempt at delivering it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True, help_text="[{at, status_code, error}]")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id}"


class ChannelTry(models.Model):
    """One question asked through a channel page's "Try it" form, answered in the background.

    A CPU model can take minutes to answer; the page polls this row instead of holding the
    request open, and the answer (recorded as an output of the live version) stays reachable
    through it after the browser has gone."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    # Enforced by services.channel_try.channel_try_transition. Running -> running is a
    # redelivered message taking over a job whose worker died mid-answer.
    TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.FAILED},
        Status.RUNNING: {Status.RUNNING, Status.DONE, Status.FAILED},
        Status.DONE: set(),
        Status.FAILED: set(),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="tries")
    version = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Live when asked; the version that answered once done.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="channel_tries"
    )
    question = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    output = models.ForeignKey(
        "reviews.Output", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    error = models.TextField(blank=True)
    message_id = models.CharField(max_length=64, blank=True)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When its message was last sent (the sweep resends)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["channel", "user", "-created_at"], name="channel_try_mine")]

    def __str__(self) -> str:
        return f"try {self.pk} on {self.channel_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)
