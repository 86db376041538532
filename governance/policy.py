"""Sign-off policy and the regression gate: pure reads, no writes.

A channel's effective policy is SIGNOFF_GOVERNANCE["DEFAULT_POLICY"] with the channel's own
overrides on top; a sign-off request keeps a copy of it, so changing a channel's policy later
never changes what an earlier request was held to."""

from typing import Any

from django.conf import settings

POLICY_KEYS = {
    "approvals_required",
    "approver_role",
    "separation_of_duties",
    "allow_override",
    "gate",
}


def default_policy() -> dict[str, Any]:
    policy = settings.SIGNOFF_GOVERNANCE["DEFAULT_POLICY"]
    return {**policy, "gate": dict(policy["gate"])}


def channel_policy(channel: Any) -> dict[str, Any]:
    return {**default_policy(), **(channel.policy or {})}


def lower_is_better(metric: str) -> bool:
    return metric in settings.SIGNOFF_GOVERNANCE["LOWER_IS_BETTER"]


def validate_policy(policy: Any) -> tuple[str, str] | None:
    """(field, message) of the first problem in a policy override, or None."""
    from core.roles import Role

    if not isinstance(policy, dict):
        return "policy", "must be an object"
    for key in policy:
        if key not in POLICY_KEYS:
            return f"policy.{key}", "unknown policy key"
    required = policy.get("approvals_required", 1)
    if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= 10:
        return "policy.approvals_required", "must be an integer from 1 to 10"
    if policy.get("approver_role", Role.APPROVER) not in Role.values:
        return "policy.approver_role", "must be a role"
    for key in ("separation_of_duties", "allow_override"):
        if not isinstance(policy.get(key, True), bool):
            return f"policy.{key}", "must be true or false"
    gate = policy.get("gate", {})
    if not isinstance(gate, dict):
        return "policy.gate", "must be an object of metric: tolerance"
    for metric, tolerance in gate.items():
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
            return f"policy.gate.{metric}", "tolerance must be a number >= 0"
    return None


def gate_check(
    *, tolerances: dict[str, float], comparisons: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every gated metric of every comparison with the live version, and whether it holds.

    A comparison is {"split", "candidate": {...}, "live": {...}}; worse_by is how much worse
    the candidate is (positive) in the metric's own direction."""
    checks = []
    for comparison in comparisons:
        for metric, tolerance in sorted(tolerances.items()):
            cand = comparison["candidate"].get(metric)
            live = comparison["live"].get(metric)
            if cand is None or live is None:
                continue
            worse_by = cand - live if lower_is_better(metric) else live - cand
            checks.append(
                {
                    "split": comparison["split"],
                    "metric": metric,
                    "candidate": cand,
                    "live": live,
                    "worse_by": round(worse_by, 6),
                    "tolerance": tolerance,
                    "passed": worse_by <= tolerance,
                }
            )
    return checks


# Which record-keeping and human-oversight items each section of the compliance report serves.
FRAMEWORK_MAP: dict[str, dict[str, list[str]]] = {
    "identity": {
        "eu_ai_act": ["Art. 12(1) automatic recording of events", "Art. 12(2)(a) risk tracing"],
        "nist_ai_rmf": ["GOVERN 1.6 inventory of AI systems", "MAP 4.1 third-party components"],
    },
    "base_model": {
        "eu_ai_act": ["Art. 12(2)(a) identifying situations of risk"],
        "nist_ai_rmf": ["MAP 4.1 third-party components", "GOVERN 6.1 third-party risks"],
    },
    "training": {
        "eu_ai_act": ["Art. 12(1) logging over the lifetime", "Art. 12(2)(b) post-market data"],
        "nist_ai_rmf": ["MAP 2.3 scientific integrity", "MEASURE 2.1 test sets and tools"],
    },
    "dataset": {
        "eu_ai_act": ["Art. 12(3)(c) input data identification"],
        "nist_ai_rmf": ["MAP 2.3 data provenance", "MEASURE 2.10 privacy risk (PII removal)"],
    },
    "examples": {
        "eu_ai_act": ["Art. 12(3)(c) input data identification"],
        "nist_ai_rmf": ["MAP 2.3 data provenance"],
    },
    "reviewers": {
        "eu_ai_act": ["Art. 12(3)(d) natural persons verifying results", "Art. 14(1) oversight"],
        "nist_ai_rmf": ["GOVERN 2.1 roles and responsibilities", "MEASURE 1.3 human review"],
    },
    "agreement": {
        "eu_ai_act": ["Art. 14(4)(b) awareness of automation bias"],
        "nist_ai_rmf": ["MEASURE 2.5 validity and reliability", "MEASURE 1.3 human review"],
    },
    "evaluations": {
        "eu_ai_act": ["Art. 14(4)(a) understanding capacities and limitations"],
        "nist_ai_rmf": ["MEASURE 2.3 performance", "MEASURE 2.5 validity", "MEASURE 2.13"],
    },
    "approvals": {
        "eu_ai_act": ["Art. 14(4)(d) deciding not to use the output", "Art. 12(3)(d)"],
        "nist_ai_rmf": ["GOVERN 1.3 risk tolerance", "MANAGE 1.1 go / no-go decision"],
    },
    "deployments": {
        "eu_ai_act": ["Art. 14(4)(e) interrupting the system (rollback)", "Art. 12(2)(c)"],
        "nist_ai_rmf": ["MANAGE 2.4 disengaging or deactivating", "MANAGE 4.1 post-deployment"],
    },
    "audit_chain": {
        "eu_ai_act": ["Art. 12(1) logs over the lifetime", "Art. 12(2) traceability"],
        "nist_ai_rmf": ["GOVERN 4.2 documentation", "MEASURE 2.8 transparency"],
    },
    "monitoring": {
        "eu_ai_act": ["Art. 12(2)(c) operation monitoring", "Art. 14(4)(a) anomaly detection"],
        "nist_ai_rmf": ["MEASURE 3.1 tracking risks over time", "MANAGE 4.1 monitoring"],
    },
}
