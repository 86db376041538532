"""The examples a build starts from: positive examples matching the build's filters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, models
from django.db.models.functions import Cast

from reviews.models import Output

from .. import pipeline
from ..models import Example
from .build_settings import BuildSettings


@dataclass
class Candidates:
    items: list[pipeline.Item]
    negatives: int


def _candidates(settings: BuildSettings) -> Candidates:
    """Positive examples matching the filters, as pipeline items; and the negatives count."""
    examples = Example.objects.all()
    if settings.queues:
        examples = examples.filter(queue_name__in=settings.queues)
    if settings.sources:
        examples = examples.filter(source__in=settings.sources)
    if settings.model_name:
        examples = examples.filter(model_name=settings.model_name)
    if settings.model_version:
        examples = examples.filter(model_version=settings.model_version)
    if settings.resolved_from:
        examples = examples.filter(resolved_at__gte=datetime.fromisoformat(settings.resolved_from))
    if settings.resolved_to:
        examples = examples.filter(resolved_at__lte=datetime.fromisoformat(settings.resolved_to))
    if settings.tags:
        examples = examples.filter(
            output_id__in=Output.objects.filter(tag_rows__name__in=settings.tags).values("id")
        )
    if not settings.include_auto_accepted:
        examples = examples.filter(unreviewed=False)
    negatives = examples.filter(kind=Example.Kind.NEGATIVE).count()
    query = (
        examples.filter(kind=Example.Kind.POSITIVE, label__in=settings.labels)
        .annotate(messages_text=Cast("messages", models.TextField()))
        .annotate(tags_text=Cast("tags", models.TextField()))
        .order_by("id")
        .values_list(
            "id",
            "messages_text",
            "label",
            "weight",
            "source",
            "queue_name",
            "tags_text",
            "original_text",
        )
        .query
    )
    # A plain cursor, JSON as text and one json.loads per value: the ORM's and the driver's
    # per-value converters cost more than the JSON decoding itself over 100,000 rows. Tags are
    # decoded only where there are some.
    sql, params = query.get_compiler(connection=connection).as_sql()
    items: list[pipeline.Item] = []
    loads = json.loads
    item = pipeline.Item
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(5000):
            for eid, messages, label, weight, source, queue, tags, original in chunk:
                items.append(
                    item(
                        eid,
                        loads(messages),
                        label,
                        weight,
                        source,
                        queue,
                        [] if tags in ("[]", None) else list(loads(tags) or []),
                        original if label == "corrected" else "",
                    )
                )
    return Candidates(items=items, negatives=negatives)


def candidate_count(**options: Any) -> int:
    """How many examples a build with these filters would start from (after a sync)."""
    settings = BuildSettings.from_options(options)
    examples = Example.objects.filter(kind=Example.Kind.POSITIVE, label__in=settings.labels)
    if settings.queues:
        examples = examples.filter(queue_name__in=settings.queues)
    if not settings.include_auto_accepted:
        examples = examples.filter(unreviewed=False)
    pending = Output.objects.filter(
        status__in=[Output.Status.RESOLVED, Output.Status.AUTO_ACCEPTED],
        dataset_example__isnull=True,
    ).count()
    return examples.count() + pending
