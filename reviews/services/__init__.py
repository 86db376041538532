"""Every write of the review loop: `from reviews.services import review_submit`."""

from .audit import (
    audit_append,
    audit_append_many,
    audit_verified_head,
    audit_verify,
    audit_verify_against_head,
)
from .decisions import output_mark_gold, review_submit
from .ingest import IngestResult, outputs_ingest, validate_batch
from .leases import lease_release, lease_renew, queue_claim_next
from .queues import guidelines_publish, queue_save, routing_rule_delete, routing_rule_save
from .routing import Router, default_queue, escalation_queue
from .undo import review_undo

__all__ = [
    "IngestResult",
    "Router",
    "audit_append",
    "audit_append_many",
    "audit_verified_head",
    "audit_verify",
    "audit_verify_against_head",
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
