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
        "governance.Channel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The channel whose regression set (split regression) or live version it used.",
    )
    signoff_request = models.ForeignKey(
        "governance.SignoffRequest",
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


# -- monitoring after release (issue 7) --------------------------------------------------------
