"""Serving: questions asked through a channel's "Try it" form, answered in the background.

The table keeps the name it had in training_app (`db_table`)."""

import uuid

from django.conf import settings
from django.db import models


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

    # Read by core.lifecycle.transition (services.channel_try). Running -> running is a
    # redelivered message taking over a job whose worker died mid-answer.
    TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.FAILED},
        Status.RUNNING: {Status.RUNNING, Status.DONE, Status.FAILED},
        Status.DONE: set(),
        Status.FAILED: set(),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.ForeignKey(
        "governance.Channel", on_delete=models.CASCADE, related_name="tries"
    )
    version = models.ForeignKey(
        "training_app.ModelVersion",
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
        db_table = "training_app_channeltry"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["channel", "user", "-created_at"], name="channel_try_mine")]

    def __str__(self) -> str:
        return f"try {self.pk} on {self.channel_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)
