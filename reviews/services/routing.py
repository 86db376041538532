"""Ordered routing rules: which queue an output goes to, or whether it is auto-accepted."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from ..models import Queue, RoutingRule


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
    if rule.source and item["source"] != rule.source:
        return False
    if rule.model_name and item["model_name"] != rule.model_name:
        return False
    if rule.confidence_below is not None:
        confidence = item.get("confidence")
        if confidence is not None and confidence >= rule.confidence_below:
            return False
    if rule.tag and rule.tag not in item["tags"]:
        return False
    if rule.metadata_key:
        metadata = item["metadata"]
        if rule.metadata_key not in metadata or metadata[rule.metadata_key] != rule.metadata_value:
            return False
    if rule.sample_rate is not None:
        point = sample_point(rule.pk, item["source"], item["external_id"])
        if point >= rule.sample_rate:
            return False
    return True


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
        self._default: Queue | None = None

    def route(self, item: dict[str, Any]) -> RouteDecision:
        for rule in self.rules:
            if rule.queue is not None and not rule.queue.is_active:
                continue
            if rule_matches(rule, item):
                why = f"rule '{rule.name}' ({describe_rule(rule)})"
                if rule.action == RoutingRule.Action.AUTO_ACCEPT:
                    return RouteDecision(None, rule, True, f"auto-accepted by {why}")
                return RouteDecision(rule.queue, rule, False, why, rule.priority_boost)
        if self._default is None:
            self._default = default_queue()
        return RouteDecision(self._default, None, False, "no rule matched: default queue")
