"""Configuration of queues, their guidelines and the routing rules; every change is audited."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.forms.models import model_to_dict

from core.audit.chain import audit_append
from core.permissions import require
from reviews.errors import PermissionRefused, ValidationFailed
from reviews.models import GuidelineVersion, Queue, RoutingRule
from reviews.selectors import guidelines_current
from reviews.services.text import unstorable

QUEUE_FIELDS = {
    "name",
    "description",
    "role",
    "required_reviews",
    "lease_seconds",
    "gold_rate",
    "is_active",
}
RULE_FIELDS = {
    "name",
    "position",
    "is_active",
    "action",
    "queue",
    "confidence_below",
    "tag",
    "metadata_key",
    "metadata_value",
    "model_name",
    "source",
    "sample_rate",
    "priority_boost",
}


def _require_manager(user: AbstractBaseUser) -> None:
    require(
        user,
        "queues.manage",
        PermissionRefused("Only leads and admins configure queues and routing."),
    )


def _full_clean(instance: Any) -> None:
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if isinstance(value, str) and (problem := unstorable(value)):
            raise ValidationFailed(f"{field.name}: {problem}", field=field.name)
    try:
        instance.full_clean()
    except DjangoValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        name = "" if field == "__all__" else field
        raise ValidationFailed(
            f"{name}: {messages[0]}" if name else messages[0], field=name or None
        ) from None


def _snapshot(instance: Any, fields: set[str]) -> dict[str, Any]:
    return {key: value for key, value in model_to_dict(instance).items() if key in fields}


@transaction.atomic
def queue_save(
    *,
    user: AbstractBaseUser,
    queue: Queue | None = None,
    guidelines: str | None = None,
    **values: Any,
) -> Queue:
    """Create (queue=None) or change a queue; new guidelines text publishes a new version."""
    _require_manager(user)
    unknown = set(values) - QUEUE_FIELDS
    if unknown:
        raise ValidationFailed(f"{sorted(unknown)[0]}: unknown field", field=sorted(unknown)[0])
    creating = queue is None
    if queue is None:
        queue = Queue()
    else:
        queue = Queue.objects.select_for_update(no_key=True).get(pk=queue.pk)
    before = {} if creating else _snapshot(queue, QUEUE_FIELDS)
    for key, value in values.items():
        setattr(queue, key, value)
    _full_clean(queue)
    queue.save()
    after = _snapshot(queue, QUEUE_FIELDS)
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    if changes:
        audit_append(
            actor=user,
            action="queue.created" if creating else "queue.changed",
            object_type="queue",
            object_id=queue.pk,
            payload={"name": queue.name, "changes": changes},
        )
    if guidelines is not None:
        guidelines_publish(queue=queue, user=user, text=guidelines)
    return queue


@transaction.atomic
def guidelines_publish(*, queue: Queue, user: AbstractBaseUser, text: str) -> GuidelineVersion:
    _require_manager(user)
    if len(text) > 100_000:
        raise ValidationFailed("guidelines: longer than 100,000 characters", field="guidelines")
    if problem := unstorable(text):
        raise ValidationFailed(f"guidelines: {problem}", field="guidelines")
    # Locked so that two editors cannot both publish "version n + 1".
    Queue.objects.select_for_update(no_key=True).get(pk=queue.pk)
    current = guidelines_current(queue=queue)
    if current is not None and current.text == text:
        return current
    version = GuidelineVersion.objects.create(
        queue=queue, version=(current.version + 1) if current else 1, text=text, created_by=user
    )
    audit_append(
        actor=user,
        action="queue.guidelines_published",
        object_type="queue",
        object_id=queue.pk,
        payload={"name": queue.name, "version": version.version, "chars": len(text)},
    )
    return version


@transaction.atomic
def routing_rule_save(
    *, user: AbstractBaseUser, rule: RoutingRule | None = None, **values: Any
) -> RoutingRule:
    _require_manager(user)
    unknown = set(values) - RULE_FIELDS
    if unknown:
        raise ValidationFailed(f"{sorted(unknown)[0]}: unknown field", field=sorted(unknown)[0])
    creating = rule is None
    rule = (
        RoutingRule()
        if rule is None
        else RoutingRule.objects.select_for_update(no_key=True).get(pk=rule.pk)
    )
    before = {} if creating else _snapshot(rule, RULE_FIELDS)
    for key, value in values.items():
        setattr(rule, key, value)
    if rule.action == RoutingRule.Action.ROUTE and rule.queue_id is None:
        raise ValidationFailed("queue: a routing rule that routes needs a queue", field="queue")
    if rule.queue is not None and rule.queue.kind != Queue.Kind.REVIEW:
        raise ValidationFailed("queue: rules route to review queues only", field="queue")
    _full_clean(rule)
    rule.save()
    after = _snapshot(rule, RULE_FIELDS)
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    if changes:
        audit_append(
            actor=user,
            action="routing_rule.created" if creating else "routing_rule.changed",
            object_type="routing_rule",
            object_id=rule.pk,
            payload={"name": rule.name, "changes": changes},
        )
    return rule


@transaction.atomic
def routing_rule_delete(*, user: AbstractBaseUser, rule: RoutingRule) -> None:
    _require_manager(user)
    snapshot = _snapshot(rule, RULE_FIELDS)
    rule_id = rule.pk
    rule.delete()
    audit_append(
        actor=user,
        action="routing_rule.deleted",
        object_type="routing_rule",
        object_id=rule_id,
        payload={"rule": snapshot},
    )
