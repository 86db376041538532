"""Every write of the review loop: `from reviews.services import review_submit`."""

from reviews.services.decisions import output_mark_gold, review_submit
from reviews.services.ingest import IngestResult, outputs_ingest, validate_batch
from reviews.services.leases import lease_release, lease_renew, queue_claim_next
from reviews.services.queues import (
    guidelines_publish,
    queue_save,
    routing_rule_delete,
    routing_rule_save,
)
from reviews.services.routing import Router, default_queue, escalation_queue
from reviews.services.undo import review_undo

__all__ = [
    "IngestResult",
    "Router",
    "default_queue",
    "escalation_queue",
    "guidelines_publish",
    "lease_release",
    "lease_renew",
    "output_mark_gold",
    "outputs_ingest",
    "queue_claim_next",
    "queue_save",
    "review_submit",
    "review_undo",
    "routing_rule_delete",
    "routing_rule_save",
    "validate_batch",
]
