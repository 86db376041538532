import pytest

from core.models import AuditEvent
from reviews.errors import IngestInvalid
from reviews.models import Output, OutputTag, RoutingRule
from reviews.services import outputs_ingest, routing_rule_save
from reviews.services.routing import sample_point

from ..factories import QueueFactory, output_payload

pytestmark = pytest.mark.django_db


def test_it_stores_a_batch_and_routes_to_the_default_queue(personas):
    result = outputs_ingest(payload=[output_payload(i) for i in range(3)], actor=personas["admin"])
    assert result.created_count == 3
    assert Output.objects.count() == 3
    output = Output.objects.first()
    assert output.queue.name == "triage"
    assert output.routing_reason == "no rule matched: default queue"
    assert OutputTag.objects.filter(name="billing").count() == 3


def test_it_returns_the_stored_record_when_reposted(personas):
    first = outputs_ingest(payload=output_payload(1), actor=personas["admin"])
    again = outputs_ingest(payload=output_payload(1, output="changed text"), actor=None)
    assert again.created == [False]
    assert again.outputs[0].pk == first.outputs[0].pk
    assert Output.objects.get().output_text == "Answer 1."


def test_the_same_external_id_under_another_source_is_another_output(personas):
    outputs_ingest(payload=output_payload(1), actor=None)
    outputs_ingest(payload=output_payload(1, source="other"), actor=None)
    assert Output.objects.count() == 2


def test_a_mixed_batch_creates_only_new_ones(personas):
    outputs_ingest(payload=[output_payload(1)], actor=None)
    result = outputs_ingest(payload=[output_payload(1), output_payload(2)], actor=None)
    assert result.created == [False, True]
    assert Output.objects.count() == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"confidence": 1.5}, "[1].confidence"),
        ({"confidence": "high"}, "[1].confidence"),
        ({"external_id": ""}, "[1].external_id"),
        ({"output": None}, "[1].output"),
        ({"input": 42}, "[1].input"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "[1].input[0].role"),
        ({"tags": "billing"}, "[1].tags"),
        ({"metadata": [1, 2]}, "[1].metadata"),
        ({"priority": 10**9}, "[1].priority"),
        ({"output": "x" * 100_001}, "[1].output"),
        ({"output": "nul\x00byte"}, "[1].output"),
        ({"surprise": 1}, "[1].surprise"),
        ({"queue": "no-such-queue"}, "[1].queue"),
    ],
)
def test_one_bad_item_refuses_the_whole_batch(personas, change, field):
    batch = [output_payload(0), output_payload(1, **change), output_payload(2)]
    with pytest.raises(IngestInvalid) as error:
        outputs_ingest(payload=batch, actor=None)
    assert error.value.field == field
    assert Output.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_it_refuses_more_than_a_thousand(personas):
    with pytest.raises(IngestInvalid, match="At most 1000"):
        outputs_ingest(payload=[output_payload(i) for i in range(1001)], actor=None)


def test_it_refuses_a_duplicate_inside_one_batch(personas):
    with pytest.raises(IngestInvalid, match="appears twice"):
        outputs_ingest(payload=[output_payload(1), output_payload(1)], actor=None)


def test_an_explicit_queue_bypasses_routing(personas):
    queue = QueueFactory(name="legal")
    result = outputs_ingest(payload=output_payload(1, queue="legal"), actor=None)
    assert result.outputs[0].queue == queue
    assert result.outputs[0].routing_reason == "queue named by the client"


def test_ingest_appends_one_audit_event_per_batch(personas):
    outputs_ingest(payload=[output_payload(i) for i in range(5)], actor=personas["ml_engineer"])
    event = AuditEvent.objects.get()
    assert event.action == "outputs.ingested"
    assert event.payload["count"] == 5


class TestRouting:
    @pytest.fixture
    def queues(self, personas):
        return {name: QueueFactory(name=name) for name in ["low", "flags", "audit", "gpt"]}

    @pytest.fixture
    def rules(self, personas, queues):
        admin = personas["admin"]
        routing_rule_save(
            user=admin, name="flag", position=1, tag="complaint", queue=queues["flags"]
        )
        routing_rule_save(
            user=admin,
            name="vip",
            position=2,
            metadata_key="tier",
            metadata_value="vip",
            queue=queues["flags"],
            priority_boost=10,
        )
        routing_rule_save(
            user=admin, name="other model", position=3, model_name="gpt-x", queue=queues["gpt"]
        )
        routing_rule_save(
            user=admin, name="low", position=4, confidence_below=0.6, queue=queues["low"]
        )
        routing_rule_save(
            user=admin, name="audit", position=5, sample_rate=0.25, queue=queues["audit"]
        )
        routing_rule_save(
            user=admin, name="accept", position=6, action=RoutingRule.Action.AUTO_ACCEPT
        )

    def route(self, **overrides):
        return outputs_ingest(payload=output_payload(**overrides), actor=None).outputs[0]

    def test_tag_rule_wins_by_order(self, rules):
        output = self.route(n=1, tags=["complaint"], confidence=0.1)
        assert output.queue.name == "flags"
        assert output.routing_rule.name == "flag"
        assert "tag=complaint" in output.routing_reason

    def test_metadata_rule_and_priority_boost(self, rules):
        output = self.route(n=2, metadata={"tier": "vip"}, priority=1)
        assert output.queue.name == "flags"
        assert output.priority == 11

    def test_model_name_rule(self, rules):
        assert self.route(n=3, model_name="gpt-x").queue.name == "gpt"

    def test_low_confidence_and_missing_confidence_go_to_review(self, rules):
        assert self.route(n=4, confidence=0.59).queue.name == "low"
        assert self.route(n=5, confidence=None).queue.name == "low"

    def test_confident_outputs_are_sampled_or_auto_accepted(self, rules):
        outputs = [self.route(n=100 + i, confidence=0.95) for i in range(200)]
        sampled = [o for o in outputs if o.queue_id]
        accepted = [o for o in outputs if o.status == Output.Status.AUTO_ACCEPTED]
        assert len(sampled) + len(accepted) == 200
        assert 25 <= len(sampled) <= 75  # 25 % of 200, deterministic per id
        rule = RoutingRule.objects.get(name="audit")
        for output in sampled:
            assert sample_point(rule.pk, output.source, output.external_id) < 0.25
        first = accepted[0]
        assert first.resolution == Output.Resolution.APPROVED
        assert first.resolved_by == Output.ResolvedBy.ROUTING
        assert "auto-accepted by rule 'accept'" in first.routing_reason

    def test_inactive_rules_are_ignored(self, rules, personas):
        rule = RoutingRule.objects.get(name="flag")
        routing_rule_save(user=personas["admin"], rule=rule, is_active=False)
        assert self.route(n=9, tags=["complaint"], confidence=0.1).queue.name == "low"
