"""The bulk ingest path at full batch size (1,000), through the API: COPY on PostgreSQL,
executemany on SQLite, the same answers and the same stored rows on both."""

import json
import threading
import uuid

import pytest
from django.db import connection, connections

from core.audit import audit_verify
from core.models import AuditEvent
from reviews.errors import IngestInvalid
from reviews.models import Output, OutputTag, RoutingRule
from reviews.services import ingest as ingest_module
from reviews.services import outputs_ingest, routing_rule_save
from reviews.services.routing import sample_point

from ..factories import QueueFactory, output_payload
from ..waiting import join_threads

pytestmark = pytest.mark.django_db


def batch(start: int, size: int = 1000, **overrides) -> list[dict]:
    return [output_payload(n, **overrides) for n in range(start, start + size)]


def post(client, body):
    return client.post("/api/outputs/", json.dumps(body), content_type="application/json")


@pytest.fixture
def engineer(api, personas):
    return api(personas["ml_engineer"])


def test_it_is_idempotent_across_batches(engineer):
    first = post(engineer, batch(0))
    assert first.status_code == 201
    assert (first.data["created"], first.data["existing"]) == (1000, 0)
    ids = {item["external_id"]: item["id"] for item in first.data["items"]}

    overlapping = batch(500)  # p-500 .. p-1499: half stored already
    again = post(engineer, overlapping)
    assert again.status_code == 201
    assert (again.data["created"], again.data["existing"]) == (500, 500)
    items = again.data["items"]
    assert [item["external_id"] for item in items] == [p["external_id"] for p in overlapping]
    assert [item["created"] for item in items] == [False] * 500 + [True] * 500
    assert all(item["id"] == ids[item["external_id"]] for item in items[:500])
    assert len({item["id"] for item in items}) == 1000

    assert Output.objects.count() == 1500
    assert OutputTag.objects.count() == 1500
    events = list(AuditEvent.objects.filter(action="outputs.ingested").order_by("seq"))
    assert [event.payload["count"] for event in events] == [1000, 500]

    same = post(engineer, overlapping)
    assert same.status_code == 200
    assert (same.data["created"], same.data["existing"]) == (0, 1000)
    assert AuditEvent.objects.count() == 2


def test_a_duplicate_inside_one_batch_refuses_it_all(engineer):
    body = batch(0)
    body[741] = output_payload(3, output="the same id again")
    response = post(engineer, body)
    assert response.status_code == 400
    assert response.data["field"] == "[741].external_id"
    assert "appears twice" in response.data["detail"]
    assert Output.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"confidence": 1.01}, "[637].confidence"),
        (
            {"input": [{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}]},
            "[637].input[1].role",
        ),
        ({"input": [{"role": ["user"], "content": "x"}]}, "[637].input[0].role"),
        ({"input": [{"role": "user"}]}, "[637].input[0].content"),
        ({"tags": ["ok", "x" * 65]}, "[637].tags"),
        ({"metadata": {"note": "nul\x00"}}, "[637].metadata"),
        ({"external_id": "x" * 256}, "[637].external_id"),
    ],
)
def test_one_bad_row_in_a_thousand_is_a_400_naming_it_and_nothing_is_written(
    engineer, change, field
):
    body = batch(0)
    body[637] = output_payload(637, **change)
    response = post(engineer, body)
    assert response.status_code == 400
    assert response.data["field"] == field
    assert response.data["detail"].startswith("item 637: ")
    assert Output.objects.count() == 0
    assert OutputTag.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_the_stored_rows_hold_exactly_what_was_posted(engineer):
    unusual = output_payload(
        1,
        input="plain prompt with a tab\there, a backslash \\ and a newline\n",
        output="réponse \\N with COPY's own escapes\t\r\n",
        confidence=None,
        metadata={"nested": {"list": [1, 2.5, None, True]}, "ünïcode": "✓ 🚀", "q": '"'},
        tags=[" claims ", "claims", "home"],
        model_version="",
        priority=-7,
    )
    body = [output_payload(0), unusual]
    response = post(engineer, body)
    assert response.status_code == 201

    stored = Output.objects.get(external_id="p-1")
    assert stored.input == unusual["input"]
    assert stored.output_text == unusual["output"]
    assert stored.confidence is None
    assert stored.metadata == unusual["metadata"]
    assert stored.tags == ["claims", "home"]
    assert sorted(stored.tag_rows.values_list("name", flat=True)) == ["claims", "home"]
    assert (stored.model_version, stored.priority) == ("", -7)
    assert stored.created_at is not None and stored.created_at == stored.updated_at
    first = Output.objects.get(external_id="p-0")
    assert first.input == [{"role": "user", "content": "Question 0?"}]
    assert (first.status, first.queue.name, first.reviews_done, first.is_gold) == (
        "pending",
        "triage",
        0,
        False,
    )
    item = response.data["items"][1]
    assert item == {
        "id": stored.pk,
        "external_id": "p-1",
        "source": "api-tests",
        "status": "pending",
        "queue": "triage",
        "routing_reason": "no rule matched: default queue",
        "created": True,
    }


class TestRoutingAtBatchSize:
    @pytest.fixture
    def rules(self, personas):
        admin = personas["admin"]
        flags, low, audit = (QueueFactory(name=name) for name in ["flags", "low", "audit"])
        return {
            "vip": routing_rule_save(
                user=admin,
                name="vip",
                position=1,
                metadata_key="tier",
                metadata_value="vip",
                queue=flags,
                priority_boost=5,
            ),
            "low": routing_rule_save(
                user=admin, name="low", position=2, confidence_below=0.5, queue=low
            ),
            "audit": routing_rule_save(
                user=admin, name="audit", position=3, sample_rate=0.1, queue=audit
            ),
            "accept": routing_rule_save(
                user=admin, name="accept", position=4, action=RoutingRule.Action.AUTO_ACCEPT
            ),
        }

    def expected_rule(self, rules, payload):
        if payload["metadata"].get("tier") == "vip":
            return rules["vip"]
        if payload["confidence"] < 0.5:
            return rules["low"]
        if sample_point(rules["audit"].pk, payload["source"], payload["external_id"]) < 0.1:
            return rules["audit"]
        return rules["accept"]

    def test_every_row_stores_its_rule_and_reason(self, engineer, rules):
        body = [
            output_payload(
                n,
                confidence=(n % 10) / 10,
                metadata={"tier": "vip"} if n % 7 == 0 else {},
                priority=1,
            )
            for n in range(1000)
        ]
        named = output_payload(5000, queue="low", confidence=0.99)
        body[500] = named
        response = post(engineer, body)
        assert response.status_code == 201

        stored = {o.external_id: o for o in Output.objects.select_related("queue", "routing_rule")}
        answers = {item["external_id"]: item for item in response.data["items"]}
        counts: dict[str, int] = {}
        for payload in body:
            output = stored[payload["external_id"]]
            answer = answers[payload["external_id"]]
            assert answer["routing_reason"] == output.routing_reason
            assert answer["status"] == output.status
            assert answer["queue"] == (output.queue.name if output.queue else None)
            if payload is named:
                assert output.routing_rule is None
                assert output.routing_reason == "queue named by the client"
                assert output.queue.name == "low"
                counts["low"] = counts.get("low", 0) + 1
                continue
            rule = self.expected_rule(rules, payload)
            assert output.routing_rule == rule
            assert f"rule '{rule.name}'" in output.routing_reason
            if rule.action == RoutingRule.Action.AUTO_ACCEPT:
                assert output.queue is None
                assert output.status == Output.Status.AUTO_ACCEPTED
                assert output.resolution == Output.Resolution.APPROVED
                assert output.resolved_by == Output.ResolvedBy.ROUTING
                assert output.final_output == output.output_text
                assert output.resolved_at is not None
                where = "auto-accepted"
            else:
                assert output.queue == rule.queue
                assert output.status == Output.Status.PENDING
                assert (output.resolution, output.final_output, output.resolved_at) == (
                    "",
                    "",
                    None,
                )
                where = rule.queue.name
            assert output.priority == 1 + rule.priority_boost
            counts[where] = counts.get(where, 0) + 1
        assert set(counts) == {"flags", "low", "audit", "auto-accepted"}

        event = AuditEvent.objects.get(action="outputs.ingested")
        assert event.payload["routed"] == counts
        assert event.payload["count"] == 1000
        ids = sorted(o.pk for o in stored.values())
        assert event.payload["first_id"] == answers["p-0"]["id"] == ids[0]
        assert event.object_id == f"{ids[0]}-{answers['p-999']['id']}"
        assert event.actor.username == "ml_engineer"
        assert audit_verify() == AuditEvent.objects.count()


def test_outputs_are_loaded_in_the_order_posted(personas):
    outputs_ingest(payload=[output_payload(2)], actor=None)
    result = outputs_ingest(payload=[output_payload(n) for n in (3, 2, 1)], actor=None)
    assert result.created == [True, False, True]
    assert [o.external_id for o in result.outputs] == ["p-3", "p-2", "p-1"]
    assert [o.pk for o in result.outputs] == [item.id for item in result.items]


def test_a_row_stored_by_a_concurrent_request_is_returned_as_existing(personas, monkeypatch):
    """The other request commits between our lookup and our insert: the insert's unique
    violation rolls the batch back and the second pass finds the stored row."""
    outputs_ingest(payload=[output_payload(1)], actor=None)
    stored_among = ingest_module._stored_among
    calls = []

    def blind_first_time(source, external_ids):
        calls.append(source)
        return [] if len(calls) == 1 else stored_among(source, external_ids)

    monkeypatch.setattr(ingest_module, "_stored_among", blind_first_time)
    result = outputs_ingest(payload=[output_payload(n) for n in range(3)], actor=None)
    assert len(calls) == 2
    assert result.created == [True, False, True]
    assert Output.objects.count() == 3
    assert [e.payload["count"] for e in AuditEvent.objects.order_by("seq")] == [1, 2]


@pytest.mark.parametrize(
    "metadata",
    [{"x": float("nan")}, {"x": float("inf")}, {"id": uuid.uuid4()}, {"at": object()}],
)
def test_metadata_that_is_not_plain_json_is_refused(personas, metadata):
    with pytest.raises(IngestInvalid) as error:
        outputs_ingest(
            payload=[output_payload(0), output_payload(1, metadata=metadata)], actor=None
        )
    assert error.value.field == "[1].metadata"
    assert Output.objects.count() == 0


def test_metadata_is_measured_as_the_standard_encoder_writes_it(personas, settings):
    settings.SIGNOFF = {**settings.SIGNOFF, "MAX_METADATA_BYTES": 100}
    # 20 non-ASCII characters: 40 bytes of UTF-8, but 120 characters once escaped.
    with pytest.raises(IngestInvalid, match="larger than 100 bytes"):
        outputs_ingest(payload=output_payload(0, metadata={"k": "é" * 20}), actor=None)
    outputs_ingest(payload=output_payload(1, metadata={"k": "é" * 10, "t": (1, 2)}), actor=None)
    assert Output.objects.get().metadata == {"k": "é" * 10, "t": [1, 2]}


def test_metadata_past_64_bit_integers_is_stored_exactly(engineer):
    # orjson refuses integers past 64 bits; the standard encoder writes them exactly.
    response = post(engineer, output_payload(1, metadata={"n": 10**30, "m": -(2**70)}))
    assert response.status_code == 201
    assert Output.objects.get().metadata == {"n": 10**30, "m": -(2**70)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_of_one_batch_store_it_once_on_postgres(personas):
    """Each COPY waits on the first writer's uncommitted keys, then fails with a unique
    violation; its retry finds the rows and answers them as existing."""
    assert connection.vendor == "postgresql"
    body = batch(0, 300)
    results: list = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def post_it():
        try:
            start.wait()
            results.append(outputs_ingest(payload=body, actor=None))
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    join_threads(threads, what="the four posts of one batch")
    assert errors == []
    assert sorted(result.created_count for result in results) == [0, 0, 0, 300]
    assert len({tuple(item.id for item in result.items) for result in results}) == 1
    assert Output.objects.count() == 300
    assert OutputTag.objects.count() == 300
    assert AuditEvent.objects.filter(action="outputs.ingested").count() == 1
