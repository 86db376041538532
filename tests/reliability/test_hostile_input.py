"""Hostile bodies on the write endpoints: NUL bytes, invalid UTF-8, a 50 MB body, deeply nested
JSON, huge integers, wrong content types, one bad row in a batch of 1,000. Every one is a 4xx
with a message, never a 5xx, and nothing is written."""

import json

import pytest

from core.models import AuditEvent
from reviews.models import Output, Queue, Review, RoutingRule

from ..factories import OutputFactory, QueueFactory, output_payload

pytestmark = pytest.mark.django_db

ENDPOINTS = ["/api/outputs/", "/api/reviews/", "/api/queues/", "/api/routing-rules/"]


def state():
    return [model.objects.count() for model in (Output, Review, Queue, RoutingRule, AuditEvent)]


@pytest.fixture
def admin_api(api, personas):
    return api(personas["admin"])


def refused(response, *codes):
    assert response.status_code in (codes or range(400, 500)), response.content[:300]
    body = response.json()
    assert body["detail"]
    return body


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize(
    ("name", "raw", "content_type"),
    [
        ("invalid utf-8", b'{"name": "\xff\xfe\xfa"}', "application/json"),
        ("nested 100k deep", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        ("huge integer", b'{"name": "q", "required_reviews": 1' + b"0" * 5000 + b"}", None),
        ("nan", b'{"name": "q", "gold_rate": NaN, "confidence": NaN}', "application/json"),
        ("xml", b"<queue><name>x</name></queue>", "application/xml"),
        ("text", b"name=x", "text/plain"),
        ("truncated", b'{"name": "', "application/json"),
    ],
)
def test_a_malformed_body_is_a_4xx_and_writes_nothing(admin_api, url, name, raw, content_type):
    before = state()
    response = admin_api.generic("POST", url, raw, content_type=content_type or "application/json")
    refused(response)
    assert state() == before


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_50_mb_body_is_refused_before_parsing(admin_api, url):
    before = state()
    raw = json.dumps({"name": "x" * (50 * 1024 * 1024)}).encode()
    response = admin_api.generic("POST", url, raw, content_type="application/json")
    refused(response, 400, 413)
    assert state() == before


@pytest.mark.parametrize(
    "field", ["output", "external_id", "model_name", "metadata", "tags", "input"]
)
def test_nul_bytes_in_ingested_text_are_refused_or_stored_intact(api, personas, field):
    row = output_payload(1)
    row[field] = {
        "output": "an\x00swer",
        "external_id": "id\x00",
        "model_name": "m\x00",
        "metadata": {"k\x00": "v\x00"},
        "tags": ["t\x00"],
        "input": [{"role": "user", "content": "q\x00"}],
    }[field]
    response = api(personas["ml_engineer"]).post("/api/outputs/", [row], format="json")
    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400:
        assert Output.objects.count() == 0
    else:
        assert Output.objects.count() == 1


def test_one_bad_row_in_a_batch_of_1000_names_the_row_and_writes_nothing(api, personas):
    batch = [output_payload(i) for i in range(1000)]
    batch[537]["confidence"] = "very"
    before = state()
    response = api(personas["ml_engineer"]).post("/api/outputs/", batch, format="json")
    body = refused(response, 400)
    assert "[537]" in body["field"]
    assert state() == before


def test_huge_and_negative_numbers_in_a_review_are_4xx(api, personas):
    queue = QueueFactory(name="hostile")
    OutputFactory(queue=queue)
    client = api(personas["reviewer"])
    lease = client.post(f"/api/queues/{queue.pk}/claim/").json()["lease"]["id"]
    for value in (10**400, -1, 1e308, "\x00"):
        before = state()
        response = client.post("/api/reviews/", {"lease": lease, "decision": value}, format="json")
        refused(response, 400)
        assert state() == before


@pytest.mark.parametrize("pk", ["9" * 30, "-1", "0"])
def test_out_of_range_ids_in_paths_are_404(admin_api, pk):
    for url in (f"/api/outputs/{pk}/", f"/api/queues/{pk}/", f"/api/routing-rules/{pk}/"):
        response = admin_api.get(url)
        assert response.status_code == 404, (url, response.status_code)
