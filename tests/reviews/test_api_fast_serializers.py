"""The ingest answer's items are built by a fast list serializer (issue 19): the JSON must be
exactly what DRF's field-by-field serialization of IngestItemSerializer gives."""

from rest_framework import serializers

from reviews.api.serializers import IngestItemSerializer, IngestResultSerializer
from reviews.services.ingest import IngestedItem


class FieldByField(serializers.Serializer):
    created = serializers.IntegerField()
    existing = serializers.IntegerField()
    items = serializers.ListSerializer(
        child=type("Item", (serializers.Serializer,), dict(IngestItemSerializer._declared_fields))()
    )


def test_fast_ingest_items_match_drf_field_by_field():
    items = [
        IngestedItem(
            i, "src", f"ext-{i}", "pending", "triage" if i % 2 else None, "rule", i % 3 == 0
        )
        for i in range(50)
    ]
    body = {"created": 17, "existing": 33, "items": items}
    assert IngestResultSerializer(body).data == FieldByField(body).data
    assert list(IngestResultSerializer(body).data["items"][0]) == list(
        FieldByField(body).data["items"][0]
    )
