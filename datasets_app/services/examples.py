"""Hand edits of examples, refused once a dataset version uses the example."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit_append

from .. import pipeline
from ..errors import ExampleInUse, InvalidDatasetRequest
from ..models import DatasetVersionExample, Example


def _refuse_if_used(example: Example) -> None:
    versions = list(
        DatasetVersionExample.objects.filter(example_id=example.pk)
        .values_list("version_id", flat=True)
        .order_by("version_id")[:5]
    )
    if versions:
        raise ExampleInUse(
            f"Example {example.pk} is used by dataset version(s) "
            f"{', '.join(map(str, versions))}, which are immutable.",
            extra={"versions": versions},
        )


@transaction.atomic
def example_update(
    *, user: AbstractBaseUser, example: Example, messages: list[dict[str, str]]
) -> Example:
    """Hand-edit an example's messages; refused once any dataset version uses it."""
    # Lock the row: a build finishing meanwhile must not capture the example mid-edit.
    example = Example.objects.select_for_update().get(pk=example.pk)
    _refuse_if_used(example)
    if (
        not isinstance(messages, list)
        or len(messages) < 2
        or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
            for m in messages
        )
        or messages[-1]["role"] != "assistant"
    ):
        raise InvalidDatasetRequest(
            "messages must be [{role, content}, ...] ending with an assistant message.",
            field="messages",
        )
    before = example.messages
    example.messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    example.save(update_fields=["messages", "updated_at"])
    audit_append(
        actor=user,
        action="example.updated",
        object_type="example",
        object_id=example.pk,
        payload={
            "before_sha256": pipeline.content_hash(before),
            "after_sha256": pipeline.content_hash(example.messages),
        },
    )
    return example


@transaction.atomic
def example_delete(*, user: AbstractBaseUser, example: Example) -> None:
    """Delete an example; refused once any dataset version uses it."""
    example = Example.objects.select_for_update().get(pk=example.pk)
    _refuse_if_used(example)
    pk, output_id = example.pk, example.output_id
    example.delete()
    audit_append(
        actor=user,
        action="example.deleted",
        object_type="example",
        object_id=pk,
        payload={"output_id": output_id},
    )
