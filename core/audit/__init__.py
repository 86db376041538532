"""The hash-chained audit log every app writes to: `from core.audit import audit_append`."""

from core.audit.chain import (
    audit_append,
    audit_append_many,
    audit_verified_head,
    audit_verify,
    audit_verify_against_head,
    audit_verify_since,
)
from core.audit.sealer import audit_seal, audit_sealing_status

__all__ = [
    "audit_append",
    "audit_append_many",
    "audit_seal",
    "audit_sealing_status",
    "audit_verified_head",
    "audit_verify",
    "audit_verify_against_head",
    "audit_verify_since",
]
