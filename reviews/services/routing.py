"""Ordered routing rules: which queue an output goes to, or whether it is auto-accepted."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from reviews.models import Queue, RoutingRule


@dataclass(frozen=True)
class RouteDecision:
    queue: Queue | None
    rule: RoutingRule | None
    auto_accept: bool
    reason: str
    priority_boost: int = 0


def sample_point(rule_id: int, source: str, external_id: str) -> float:
    """A stable number in [0, 1) per (rule, output): the same output always samples the same
    way, so an auditor can recompute why it was or was not sent to review."""
    digest = hashlib.sha256(f"{rule_id}:{source}:{external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def rule_matches(rule: RoutingRule, item: dict[str, Any]) -> bool:
    return _CompiledRule.of(rule).matches(item)


def describe_rule(rule: RoutingRule) -> str:
    parts = []
    if rule.source:
        parts.append(f"source={rule.source}")
    if rule.model_name:
        parts.append(f"model={rule.model_name}")
    if rule.confidence_below is not None:
        parts.append(f"confidence<{rule.confidence_below}")
    if rule.tag:
        parts.append(f"tag={rule.tag}")
    if rule.metadata_key:
        parts.append(f"metadata.{rule.metadata_key}={rule.metadata_value!r}")
    if rule.sample_rate is not None:
        parts.append(f"sample {rule.sample_rate:.1%}")
    return " and ".join(parts) or "always"


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    """A rule's conditions read once per batch, with the decision it gives already built:
    routing 1,000 outputs then costs a few attribute reads each, not model lookups and
    string formatting (see bench/bench_ingest.py)."""

    rule_id: int
    source: str
    model_name: str
    confidence_below: float | None
    tag: str
    metadata_key: str
    metadata_value: Any
    sample_rate: float | None
    decision: RouteDecision

    @classmethod
    def of(cls, rule: RoutingRule) -> "_CompiledRule":
        why = f"rule '{rule.name}' ({describe_rule(rule)})"
        if rule.action == RoutingRule.Action.AUTO_ACCEPT:
            decision = RouteDecision(None, rule, True, f"auto-accepted by {why}")
        else:
            decision = RouteDecision(rule.queue, rule, False, why, rule.priority_boost)
        return cls(
            rule_id=rule.pk,
            source=rule.source,
            model_name=rule.model_name,
            confidence_below=rule.confidence_below,
            tag=rule.tag,
            metadata_key=rule.metadata_key,
            metadata_value=rule.metadata_value,
            sample_rate=rule.sample_rate,
            decision=decision,
        )

    def matches(self, item: dict[str, Any]) -> bool:
        if self.source and item["source"] != self.source:
            return False
        if self.model_name and item["model_name"] != self.model_name:
            return False
        if self.confidence_below is not None:
            confidence = item.get("confidence")
            # Outputs without a confidence match: nobody vouched for them.
            if confidence is not None and confidence >= self.confidence_below:
                return False
        if self.tag and self.tag not in item["tags"]:
            return False
        if self.metadata_key:
            metadata = item["metadata"]
            if (
                self.metadata_key not in metadata
                or metadata[self.metadata_key] != self.metadata_value
            ):
                return False
        if self.sample_rate is not None:
            point = sample_point(self.rule_id, item["source"], item["external_id"])
            if point >= self.sample_rate:
                return False
        return True


def default_queue() -> Queue:
    queue, _ = Queue.objects.get_or_create(
        name=settings.SIGNOFF["DEFAULT_QUEUE"],
        defaults={"description": "Outputs no routing rule claimed."},
    )
    return queue


def escalation_queue() -> Queue:
    queue = Queue.objects.filter(kind=Queue.Kind.ESCALATION).first()
    if queue is None:
        queue, _ = Queue.objects.get_or_create(
            name=settings.SIGNOFF["ESCALATION_QUEUE"],
            defaults={
                "kind": Queue.Kind.ESCALATION,
                "role": "lead",
                "description": "Disagreements and escalations; a lead's decision is final.",
            },
        )
    return queue


class Router:
    """Routes many outputs against one snapshot of the rules (one query per batch)."""

    def __init__(self, rules: Sequence[RoutingRule] | None = None):
        if rules is None:
            rules = list(
                RoutingRule.objects.filter(is_active=True)
                .select_related("queue")
                .order_by("position", "id")
            )
        self.rules = rules
        # A rule whose queue was switched off routes nothing: the next rule decides.
        self._compiled = [
            _CompiledRule.of(rule) for rule in rules if rule.queue is None or rule.queue.is_active
        ]
        self._fallback: RouteDecision | None = None

    def route(self, item: dict[str, Any]) -> RouteDecision:
        for rule in self._compiled:
            if rule.matches(item):
                return rule.decision
        if self._fallback is None:
            self._fallback = RouteDecision(
                default_queue(), None, False, "no rule matched: default queue"
            )
        return self._fallback
