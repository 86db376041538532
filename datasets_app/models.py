"""Training data made from reviews: examples, and the immutable dataset versions built from them.

Writes go through `datasets_app.services`; these classes hold fields, constraints, the status
transition table and tiny properties.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Example(models.Model):
    """One resolved output turned into a chat-form training example, with its provenance.

    The provenance is relational, not a copy: the output (PROTECTed), that output's reviews
    and reviewers (never deleted; once a version uses the example its output is locked, so no
    review can be undone), the queue and routing rule, and the resolution time below.
    `governance.compliance.example_lineage` reads it back.

    `messages` is the raw chat form (the output's input messages, then an assistant message
    with the final text) before any quality step; each dataset version stores its own processed
    copy, so a pipeline change never rewrites an example. Rejected outputs are kept as
    negative examples (never in a supervised split) for later preference training.
    """

    class Kind(models.TextChoices):
        POSITIVE = "positive", "Positive (approved or corrected)"
        NEGATIVE = "negative", "Negative (rejected)"

    output = models.OneToOneField(
        "reviews.Output", on_delete=models.PROTECT, related_name="dataset_example"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    label = models.CharField(max_length=16, help_text="approved, corrected or rejected.")
    resolved_by = models.CharField(max_length=16)
    unreviewed = models.BooleanField(
        default=False, help_text="Auto-accepted by a routing rule: no person reviewed it."
    )
    lead_decided = models.BooleanField(
        default=False, help_text="A lead decided it after disagreement or an escalation."
    )
    reviewer_count = models.PositiveSmallIntegerField(default=0)
    weight = models.FloatField(default=1.0)
    messages = models.JSONField(help_text="[{role, content}, ...]; the last is the target.")
    original_text = models.TextField(
        blank=True, help_text="The model's own output (the rejected side of a preference pair)."
    )
    # The queue and rule are a snapshot of where the output was reviewed (queue_name keeps the
    # name). Django enforces PROTECT and SET_NULL when a queue or rule is deleted; a database
    # constraint and index would make every sync check and index 100,000 rows for nothing.
    queue = models.ForeignKey(
        "reviews.Queue",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    queue_name = models.CharField(max_length=64, blank=True)
    routing_rule = models.ForeignKey(
        "reviews.RoutingRule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    source = models.CharField(max_length=100)
    model_name = models.CharField(max_length=200)
    model_version = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=list, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    output_updated_at = models.DateTimeField(help_text="Output.updated_at when last synced.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        # No secondary indexes: a build reads its candidates in one scan whatever the filters,
        # and each index costs every sync an insert per example.

    def __str__(self) -> str:
        return f"example {self.pk} ({self.label}) of output {self.output_id}"


class DatasetVersion(models.Model):
    """An immutable, built list of examples with their split, settings, counts and manifest."""

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    # Allowed status moves; enforced by services.dataset_version_transition. A ready version
    # never changes again.
    TRANSITIONS = {
        Status.BUILDING: {Status.READY, Status.FAILED},
        Status.READY: set(),
        Status.FAILED: set(),
    }

    name = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    manifest_hash = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 over the canonical settings and examples."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="dataset_versions"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    built_at = models.DateTimeField(null=True, blank=True)
    run_started_at = models.DateTimeField(
        null=True, blank=True, help_text="Set by the one worker that claimed the build."
    )
    # The build's lease, so that a sweeper (services.dataset_builds_recover) can tell a lost
    # message or a dead worker from a slow build: the claim sets run_token and heartbeat_at,
    # every step renews heartbeat_at, and only the holder of run_token may finish the build.
    run_token = models.CharField(max_length=32, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker claimed this build."
    )
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When its build message was last sent."
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    settings = models.JSONField(default=dict, help_text="Filters and pipeline settings.")
    counts = models.JSONField(default=dict, help_text="Counts at every step, splits, balance.")
    progress = models.JSONField(default=dict, blank=True, help_text="{step, done, total}.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("build_dataset", "Can build dataset versions")]
        indexes = [models.Index(fields=["name", "status"], name="dataset_version_name")]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}"

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY


class DatasetVersionExample(models.Model):
    """One example's membership of one version, with the processed content the version uses."""

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"

    # No index of its own: the position constraint below starts with the version. No database
    # constraint either: members are written once, by the build, inside the transaction that
    # holds the version's row lock and marks it ready, and a version is deleted only through
    # the ORM (which deletes its members first). Checking 100,000 rows against one version row
    # at commit cost that transaction ~0.8 s.
    version = models.ForeignKey(
        DatasetVersion,
        on_delete=models.CASCADE,
        related_name="members",
        db_index=False,
        db_constraint=False,
    )
    # Indexed by the (example, version) constraint below, which also answers "which versions
    # use this example" (each index costs a build ~0.4 s per 100,000 members).
    example = models.ForeignKey(
        Example, on_delete=models.PROTECT, related_name="memberships", db_index=False
    )
    split = models.CharField(max_length=8, choices=Split.choices)
    position = models.PositiveIntegerField(help_text="Order within the split.")
    # Null when the pipeline left the example's own messages as they were (most examples): the
    # example's messages can no longer change once a version uses it, so the version need not
    # store a second copy. Read them through `processed_messages` or `selectors`.
    messages = models.JSONField(
        null=True,
        blank=True,
        help_text="Processed chat messages (null: the example's own); the last is the target.",
    )
    rejected_text = models.TextField(
        blank=True, help_text="Processed original output, for corrected examples (DPO)."
    )
    weight = models.FloatField(default=1.0)
    label = models.CharField(max_length=16)
    content_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["version", "split", "position"]
        constraints = [
            models.UniqueConstraint(fields=["example", "version"], name="dataset_member_unique"),
            models.UniqueConstraint(
                fields=["version", "split", "position"], name="dataset_member_position"
            ),
            models.CheckConstraint(
                condition=Q(split__in=["train", "eval"]), name="dataset_member_split"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version_id}:{self.split}:{self.position}"

    @property
    def processed_messages(self) -> list[dict[str, str]]:
        """The messages this version trains on."""
        return self.example.messages if self.messages is None else self.messages
