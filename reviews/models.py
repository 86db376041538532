"""The review loop's records: outputs, queues, routing rules, leases, reviews, and the audit chain.

Writes go through `reviews.services`; these classes hold fields, constraints and tiny properties.
"""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

# Role lives in core (every app checks roles); kept importable here, `Queue.role` uses it.
from core.roles import Role


class Queue(models.Model):
    class Kind(models.TextChoices):
        REVIEW = "review", "Review"
        ESCALATION = "escalation", "Escalation (leads decide)"

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=500, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.REVIEW)
    role = models.CharField(
        max_length=32,
        choices=Role.choices,
        default=Role.REVIEWER,
        help_text="Role whose members may work this queue (leads may also work reviewer queues).",
    )
    required_reviews = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(3)]
    )
    lease_seconds = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(10), MaxValueValidator(24 * 3600)]
    )
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of claims that serve a gold item instead of a new one.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(required_reviews__gte=1, required_reviews__lte=3),
                name="queue_required_reviews_1_to_3",
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0, gold_rate__lte=1), name="queue_gold_rate_0_to_1"
            ),
            models.UniqueConstraint(
                fields=["kind"], condition=Q(kind="escalation"), name="one_escalation_queue"
            ),
        ]
        permissions = [
            ("work_queue", "Can claim and review items"),
            ("lead_queue", "Can decide escalations and mark gold items"),
            ("manage_queues", "Can configure queues, guidelines and routing rules"),
        ]

    def __str__(self) -> str:
        return self.name


class GuidelineVersion(models.Model):
    """Guidelines are versioned: each review records the version it was made under."""

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="guideline_versions")
    version = models.PositiveIntegerField()
    text = models.TextField(help_text="Markdown.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["queue", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "version"], name="guideline_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.queue.name} v{self.version}"


class RoutingRule(models.Model):
    """An ordered rule: if every condition set on it holds, the output goes where `action` says.

    Empty conditions match everything, so a last rule with none is a catch-all. The sample rate
    is a condition too: a rule with `sample_rate=0.05` matches a deterministic 5 % of outputs
    (hashed from the output's identity), which is how an audit sample of otherwise
    auto-accepted outputs is expressed: put it before the auto-accept rule.
    """

    class Action(models.TextChoices):
        ROUTE = "route", "Send to queue"
        AUTO_ACCEPT = "auto_accept", "Auto-accept without review"

    name = models.CharField(max_length=100, unique=True)
    position = models.IntegerField(default=100, help_text="Lower runs first.")
    is_active = models.BooleanField(default=True)
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.ROUTE)
    queue = models.ForeignKey(
        Queue, null=True, blank=True, on_delete=models.PROTECT, related_name="routing_rules"
    )
    confidence_below = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Matches outputs whose confidence is below this (outputs without one match).",
    )
    tag = models.CharField(max_length=64, blank=True)
    metadata_key = models.CharField(max_length=100, blank=True)
    metadata_value = models.JSONField(null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=100, blank=True)
    sample_rate = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    priority_boost = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(action="auto_accept") | Q(queue__isnull=False),
                name="routing_rule_route_needs_queue",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Output(models.Model):
    """One model output awaiting (or done with) human review."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        ESCALATED = "escalated", "Escalated to leads"
        RESOLVED = "resolved", "Resolved"
        AUTO_ACCEPTED = "auto_accepted", "Auto-accepted"

    class Resolution(models.TextChoices):
        APPROVED = "approved", "Approved"
        CORRECTED = "corrected", "Corrected"
        REJECTED = "rejected", "Rejected"

    class ResolvedBy(models.TextChoices):
        SINGLE = "single", "Single review"
        CONSENSUS = "consensus", "Consensus of reviewers"
        LEAD = "lead", "Lead decision"
        ROUTING = "routing", "Routing rule (auto-accept)"

    # Allowed status moves; enforced by services.outputs.output_transition.
    TRANSITIONS = {
        Status.PENDING: {Status.RESOLVED, Status.ESCALATED},
        Status.ESCALATED: {Status.RESOLVED, Status.PENDING},
        # Back out of resolution only by undoing the deciding review, before any dataset uses it.
        Status.RESOLVED: {Status.PENDING, Status.ESCALATED},
        Status.AUTO_ACCEPTED: set(),
    }
    CLAIMABLE = (Status.PENDING, Status.ESCALATED)

    source = models.CharField(max_length=100)
    external_id = models.CharField(max_length=255)
    model_name = models.CharField(max_length=200)
    model_version = models.CharField(max_length=100, blank=True)
    input = models.JSONField(help_text="Plain text, or a list of {role, content} chat messages.")
    output_text = models.TextField()
    confidence = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    priority = models.IntegerField(default=0)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    queue = models.ForeignKey(
        Queue,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="outputs",
        help_text="The review queue it was routed to; empty when auto-accepted.",
    )
    routing_rule = models.ForeignKey(
        RoutingRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="outputs"
    )
    routing_reason = models.CharField(max_length=300, blank=True)

    # The live lease, denormalised here so that claiming reads one table and one index. Not
    # indexed: a claim then changes no indexed column, so PostgreSQL can update the row in place
    # (HOT) instead of adding entries to every index on each claim.
    lease = models.ForeignKey(
        "Lease",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    reviews_done = models.PositiveSmallIntegerField(default=0)

    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True)
    resolved_by = models.CharField(max_length=16, choices=ResolvedBy.choices, blank=True)
    final_output = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    is_gold = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"], name="output_external_id_unique_per_source"
            ),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="output_confidence_0_to_1",
            ),
        ]
        indexes = [
            # Serves claim-next: only claimable rows are in it, in the order they are served.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "created_at",
                "id",
                name="output_claim_pending",
                condition=Q(status="pending"),
            ),
            models.Index(
                models.F("priority").desc(),
                "created_at",
                "id",
                name="output_claim_escalated",
                condition=Q(status="escalated"),
            ),
            models.Index("queue", "id", name="output_gold_by_queue", condition=Q(is_gold=True)),
            models.Index(fields=["status", "queue"], name="output_status_queue"),
            models.Index(fields=["model_name", "model_version"], name="output_model"),
            models.Index(fields=["resolved_at"], name="output_resolved_at"),
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.external_id}"

    @property
    def is_chat(self) -> bool:
        return isinstance(self.input, list)


class OutputLock(models.Model):
    """An output that a dataset version uses: its reviews can no longer be undone.

    A narrow row of its own rather than a column on Output: a build locks up to ~100,000
    outputs at once, and rewriting that many wide output rows (and their index entries) took
    seconds where inserting these takes a fraction. No database constraint on the output
    either, for the same reason: the lock is written by the build that also takes the
    outputs' row locks, and outputs are never deleted under an example (PROTECT)."""

    output = models.OneToOneField(
        Output,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="dataset_lock",
        db_constraint=False,
    )
    locked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"output {self.output_id} locked at {self.locked_at:%Y-%m-%d %H:%M}"


class OutputTag(models.Model):
    """Tags, one row each, so that filtering by tag uses an index on every database."""

    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="tag_rows")
    name = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["output", "name"], name="output_tag_unique")]
        indexes = [models.Index(fields=["name", "output"], name="output_tag_name")]

    def __str__(self) -> str:
        return self.name


class Lease(models.Model):
    """One claim of one item by one reviewer. Claims and renewals are recorded here, not in
    the audit chain, so that the claim path never waits on the chain's lock."""

    class EndReason(models.TextChoices):
        SUBMITTED = "submitted", "Review submitted"
        RELEASED = "released", "Released (skipped)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    output = models.ForeignKey(Output, on_delete=models.CASCADE, related_name="leases")
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="leases")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="leases"
    )
    is_gold = models.BooleanField(default=False)
    claimed_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    renewals = models.PositiveIntegerField(default=0)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)

    class Meta:
        ordering = ["-claimed_at"]
        indexes = [models.Index(fields=["reviewer", "claimed_at"], name="lease_reviewer")]

    def __str__(self) -> str:
        return f"lease {self.id} on {self.output_id}"


class Review(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        CORRECT = "correct", "Correct"
        REJECT = "reject", "Reject"
        ESCALATE = "escalate", "Escalate"

    class Stage(models.TextChoices):
        REVIEW = "review", "Review"
        LEAD = "lead", "Lead (final)"
        GOLD = "gold", "Gold check"

    output = models.ForeignKey(Output, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    lease = models.OneToOneField(
        Lease, null=True, blank=True, on_delete=models.PROTECT, related_name="review"
    )
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="reviews")
    guideline_version = models.ForeignKey(
        GuidelineVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="reviews"
    )
    stage = models.CharField(max_length=8, choices=Stage.choices, default=Stage.REVIEW)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    original_output = models.TextField()
    corrected_output = models.TextField(blank=True)
    diff = models.JSONField(
        default=list, blank=True, help_text="Word-level diff: [op, original, corrected] chunks."
    )
    reason = models.TextField(blank=True)
    comment = models.TextField(blank=True)
    agrees_with_gold = models.BooleanField(null=True, blank=True)
    undone_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The reviewer took this decision back; kept for the record.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["output", "reviewer", "stage"],
                condition=Q(undone_at__isnull=True),
                name="review_once_per_reviewer_and_stage",
            ),
            models.CheckConstraint(
                condition=~Q(decision="correct") | ~Q(corrected_output=""),
                name="review_correct_needs_text",
            ),
        ]
        indexes = [
            models.Index(fields=["output", "reviewer"], name="review_output_reviewer"),
            models.Index(fields=["reviewer", "created_at"], name="review_reviewer_time"),
            models.Index(fields=["queue", "stage", "created_at"], name="review_queue_stage"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} on {self.output_id} by {self.reviewer_id}"

    @property
    def label(self) -> str:
        """The decision as a label for agreement statistics."""
        return str(self.decision)
