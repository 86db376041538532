import json

import pytest
from rest_framework.authtoken.models import Token

from core.models import AuditEvent
from reviews.models import Output, Review
from reviews.services import escalation_queue, queue_claim_next, review_submit

from ..factories import OutputFactory, QueueFactory, output_payload

pytestmark = pytest.mark.django_db


class TestIngest:
    def test_one_object_is_created(self, api, personas):
        response = api(personas["ml_engineer"]).post(
            "/api/outputs/", output_payload(1), format="json"
        )
        assert response.status_code == 201, response.data
        assert response.data["created"] == 1
        item = response.data["items"][0]
        assert item["queue"] == "triage" and item["created"] is True

    def test_a_list_is_created_and_reposting_returns_the_stored_records(self, api, personas):
        client = api(personas["ml_engineer"])
        batch = [output_payload(i) for i in range(10)]
        first = client.post("/api/outputs/", batch, format="json")
        assert first.status_code == 201 and first.data["created"] == 10
        again = client.post("/api/outputs/", batch, format="json")
        assert again.status_code == 200
        assert again.data["created"] == 0 and again.data["existing"] == 10
        assert [i["id"] for i in again.data["items"]] == [i["id"] for i in first.data["items"]]
        assert Output.objects.count() == 10

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ([output_payload(0), output_payload(1, confidence=2)], "[1].confidence"),
            (
                [output_payload(0), {k: v for k, v in output_payload(1).items() if k != "input"}],
                "[1].input",
            ),
            ([output_payload(0, queue="nope")], "queue"),
            ([output_payload(i) for i in range(1001)], "body"),
            ([], "body"),
            ("just a string", "body"),
            ([output_payload(0, output="x" * 100_001)], "output"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field_and_nothing_is_stored(
        self, api, personas, body, field
    ):
        response = api(personas["ml_engineer"]).post("/api/outputs/", body, format="json")
        assert response.status_code == 400, response.data
        assert response.data["field"].endswith(field)
        assert response.data["detail"]
        assert Output.objects.count() == 0

    def test_malformed_json_is_a_400(self, api, personas):
        response = api(personas["ml_engineer"]).post(
            "/api/outputs/", data='{"external_id": ', content_type="application/json"
        )
        assert response.status_code == 400
        assert "JSON" in response.data["detail"]

    @pytest.mark.parametrize("role", ["reviewer", "lead", "approver", "deployer", "auditor"])
    def test_only_ml_engineers_and_admins_ingest(self, api, personas, role):
        response = api(personas[role]).post("/api/outputs/", output_payload(1), format="json")
        assert response.status_code == 403
        assert Output.objects.count() == 0

    def test_anonymous_is_refused(self, api, personas):
        assert api().post("/api/outputs/", output_payload(1), format="json").status_code == 401

    def test_token_auth_works(self, personas, client):
        token = Token.objects.create(user=personas["ml_engineer"])
        response = client.post(
            "/api/outputs/",
            data=json.dumps(output_payload(1)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token.key}",
        )
        assert response.status_code == 201


class TestOutputList:
    def test_filters_and_pagination(self, api, personas):
        client = api(personas["ml_engineer"])
        client.post(
            "/api/outputs/",
            [
                output_payload(
                    i,
                    tags=["claims"] if i % 2 else ["billing"],
                    model_name="m2" if i == 3 else "m1",
                )
                for i in range(6)
            ],
            format="json",
        )
        assert client.get("/api/outputs/?tag=claims").data["count"] == 3
        assert client.get("/api/outputs/?model=m2").data["count"] == 1
        assert client.get("/api/outputs/?status=pending&queue=triage").data["count"] == 6
        page = client.get("/api/outputs/?limit=2")
        assert len(page.data["results"]) == 2 and page.data["next"]

    def test_the_list_does_not_grow_queries_with_rows(
        self, api, personas, django_assert_max_num_queries
    ):
        client = api(personas["auditor"])
        api(personas["ml_engineer"]).post(
            "/api/outputs/", [output_payload(i) for i in range(30)], format="json"
        )
        with django_assert_max_num_queries(4):
            assert client.get("/api/outputs/").status_code == 200

    @pytest.mark.parametrize("role", ["reviewer", "deployer", "outsider"])
    def test_reviewers_do_not_browse_outputs(self, api, personas, role):
        assert api(personas[role]).get("/api/outputs/").status_code == 403


class TestReviewLoop:
    @pytest.fixture
    def queue(self, personas):
        queue = QueueFactory(name="api-queue", required_reviews=2)
        OutputFactory(queue=queue)
        return queue

    def test_claim_then_decide(self, api, personas, queue):
        client = api(personas["reviewer"])
        claim = client.post(f"/api/queues/{queue.pk}/claim/")
        assert claim.status_code == 200
        assert claim.data["item"]["output_text"]
        assert "reviews" not in claim.data["item"] and "resolution" not in claim.data["item"]
        lease = claim.data["lease"]["id"]
        renewed = client.post(f"/api/leases/{lease}/renew/")
        assert renewed.status_code == 200 and renewed.data["renewals"] == 1
        review = client.post(
            "/api/reviews/",
            {"lease": lease, "decision": "correct", "corrected_output": "Better answer."},
        )
        assert review.status_code == 201, review.data
        assert review.data["diff"]
        assert client.post(f"/api/queues/{queue.pk}/claim/").status_code == 204

    def test_submitting_on_a_lost_lease_is_a_409(self, api, personas, queue):
        client = api(personas["reviewer"])
        lease = client.post(f"/api/queues/{queue.pk}/claim/").data["lease"]["id"]
        client.post(f"/api/leases/{lease}/release/")
        response = client.post("/api/reviews/", {"lease": lease, "decision": "approve"})
        assert response.status_code == 409
        assert response.data["code"] == "lease_lost"

    def test_reject_without_reason_is_a_400_naming_reason(self, api, personas, queue):
        client = api(personas["reviewer"])
        lease = client.post(f"/api/queues/{queue.pk}/claim/").data["lease"]["id"]
        response = client.post("/api/reviews/", {"lease": lease, "decision": "reject"})
        assert response.status_code == 400 and response.data["field"] == "reason"

    def test_unknown_queue_is_a_404(self, api, personas):
        assert api(personas["reviewer"]).post("/api/queues/99999/claim/").status_code == 404

    @pytest.mark.parametrize("role", ["auditor", "approver", "deployer", "ml_engineer"])
    def test_non_reviewers_cannot_claim_or_decide(self, api, personas, queue, role):
        client = api(personas[role])
        assert client.post(f"/api/queues/{queue.pk}/claim/").status_code == 403
        lease = queue_claim_next(queue=queue, user=personas["reviewer"])
        response = client.post("/api/reviews/", {"lease": str(lease.pk), "decision": "approve"})
        assert response.status_code == 403
        assert Review.objects.count() == 0

    def test_a_reviewer_cannot_use_another_reviewers_lease(self, api, personas, queue):
        lease = queue_claim_next(queue=queue, user=personas["reviewer"])
        response = api(personas["reviewer2"]).post(
            "/api/reviews/", {"lease": str(lease.pk), "decision": "approve"}
        )
        assert response.status_code == 403
        assert api(personas["reviewer2"]).post(f"/api/leases/{lease.pk}/renew/").status_code == 403

    def test_reviews_are_blind_until_resolved(self, api, personas, queue):
        output = queue.outputs.get()
        lease = queue_claim_next(queue=queue, user=personas["reviewer"])
        review_submit(lease_id=lease.pk, user=personas["reviewer"], decision="approve")
        other = api(personas["reviewer2"]).get(f"/api/reviews/?output={output.pk}")
        assert other.data["count"] == 0
        assert api(personas["reviewer"]).get(f"/api/reviews/?output={output.pk}").data["count"] == 1
        assert api(personas["lead"]).get(f"/api/reviews/?output={output.pk}").data["count"] == 1
        lease = queue_claim_next(queue=queue, user=personas["reviewer2"])
        review_submit(lease_id=lease.pk, user=personas["reviewer2"], decision="approve")
        assert (
            api(personas["reviewer2"]).get(f"/api/reviews/?output={output.pk}").data["count"] == 2
        )

    def test_leads_decide_escalations_through_the_api(self, api, personas, queue):
        for who, decision in [("reviewer", "approve"), ("reviewer2", "reject")]:
            lease = queue_claim_next(queue=queue, user=personas[who])
            review_submit(lease_id=lease.pk, user=personas[who], decision=decision, reason="r")
        leads = escalation_queue()
        assert api(personas["reviewer"]).post(f"/api/queues/{leads.pk}/claim/").status_code == 403
        client = api(personas["lead"])
        lease = client.post(f"/api/queues/{leads.pk}/claim/").data["lease"]["id"]
        response = client.post("/api/reviews/", {"lease": lease, "decision": "approve"})
        assert response.status_code == 201 and response.data["stage"] == "lead"

    def test_agreement_endpoint(self, api, personas, queue):
        for who in ["reviewer", "reviewer2"]:
            lease = queue_claim_next(queue=queue, user=personas[who])
            review_submit(lease_id=lease.pk, user=personas[who], decision="approve")
        data = api(personas["lead"]).get(f"/api/queues/{queue.pk}/agreement/").data
        assert data["items"] == 1 and data["percent_agreement"] == 1.0
        assert (
            api(personas["reviewer"]).get(f"/api/queues/{queue.pk}/agreement/").status_code == 403
        )


class TestQueuesAndRules:
    def test_everyone_with_a_role_sees_their_queues_with_counts(self, api, personas):
        QueueFactory(name="visible")
        response = api(personas["reviewer"]).get("/api/queues/")
        assert response.status_code == 200
        names = {q["name"] for q in response.data["results"]}
        assert "visible" in names and "escalations" not in names
        assert "counts" in response.data["results"][0]
        lead_names = {q["name"] for q in api(personas["lead"]).get("/api/queues/").data["results"]}
        assert "escalations" in lead_names

    def test_leads_create_queues_and_publish_guidelines(self, api, personas):
        client = api(personas["lead"])
        created = client.post(
            "/api/queues/", {"name": "legal", "required_reviews": 2, "guidelines": "# Be precise"}
        )
        assert created.status_code == 201, created.data
        assert created.data["guidelines_version"] == 1
        changed = client.patch(
            f"/api/queues/{created.data['id']}/", {"guidelines": "# Be precise and short"}
        )
        assert changed.data["guidelines_version"] == 2
        actions = list(AuditEvent.objects.values_list("action", flat=True))
        assert actions.count("queue.guidelines_published") == 2 and "queue.created" in actions

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "x", "required_reviews": 4}, "required_reviews"),
            ({"name": "bad name!"}, "name"),
            ({"name": "y", "gold_rate": 2}, "gold_rate"),
        ],
    )
    def test_bad_queue_config_is_a_400(self, api, personas, body, field):
        response = api(personas["admin"]).post("/api/queues/", body)
        assert response.status_code == 400
        assert response.data["field"] == field

    @pytest.mark.parametrize("role", ["reviewer", "auditor", "ml_engineer", "approver"])
    def test_only_leads_and_admins_configure(self, api, personas, role):
        client = api(personas[role])
        assert client.post("/api/queues/", {"name": "nope"}).status_code == 403
        queue = QueueFactory(name="fixed")
        assert client.patch(f"/api/queues/{queue.pk}/", {"required_reviews": 3}).status_code == 403
        assert (
            client.post("/api/routing-rules/", {"name": "r", "action": "auto_accept"}).status_code
            == 403
        )

    def test_routing_rules_crud_is_audited(self, api, personas):
        QueueFactory(name="low")
        client = api(personas["admin"])
        created = client.post(
            "/api/routing-rules/",
            {"name": "low conf", "queue": "low", "confidence_below": 0.5, "position": 1},
        )
        assert created.status_code == 201, created.data
        rule_id = created.data["id"]
        assert (
            client.patch(f"/api/routing-rules/{rule_id}/", {"confidence_below": 0.4}).status_code
            == 200
        )
        assert client.delete(f"/api/routing-rules/{rule_id}/").status_code == 204
        actions = list(AuditEvent.objects.values_list("action", flat=True))
        assert actions == ["routing_rule.created", "routing_rule.changed", "routing_rule.deleted"]

    def test_a_route_rule_without_queue_is_a_400(self, api, personas):
        response = api(personas["admin"]).post("/api/routing-rules/", {"name": "r"})
        assert response.status_code == 400 and response.data["field"] == "queue"


class TestAuditApi:
    def test_auditors_read_and_verify(self, api, personas):
        api(personas["ml_engineer"]).post("/api/outputs/", output_payload(1), format="json")
        client = api(personas["auditor"])
        listing = client.get("/api/audit/")
        assert listing.status_code == 200 and listing.data["count"] == 1
        assert listing.data["results"][0]["hash"]
        verified = client.get("/api/audit/verify/").data
        assert verified["ok"] is True
        # The head to copy elsewhere is the last event's position and hash.
        assert verified["head_seq"] == 1
        assert verified["head_hash"] == listing.data["results"][0]["hash"]

    @pytest.mark.parametrize("role", ["reviewer", "lead", "ml_engineer", "approver", "deployer"])
    def test_others_cannot_read_it(self, api, personas, role):
        assert api(personas[role]).get("/api/audit/").status_code == 403

    def test_it_cannot_be_written_through_the_api(self, api, personas):
        client = api(personas["admin"])
        assert client.post("/api/audit/", {"action": "forged"}).status_code == 405
        assert client.delete("/api/audit/").status_code == 405


def test_schema_and_docs_are_served_without_a_cdn(client, personas):
    client.force_login(personas["admin"])
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/" in html


def test_undo_through_the_api(api, personas):
    queue = QueueFactory(name="undo-api")
    OutputFactory(queue=queue)
    client = api(personas["reviewer"])
    lease = client.post(f"/api/queues/{queue.pk}/claim/").data["lease"]["id"]
    review = client.post("/api/reviews/", {"lease": lease, "decision": "approve"}).data
    assert api(personas["reviewer2"]).post(f"/api/reviews/{review['id']}/undo/").status_code == 403
    undone = client.post(f"/api/reviews/{review['id']}/undo/")
    assert undone.status_code == 200 and undone.data["lease"]["id"] != lease
    assert client.post(f"/api/reviews/{review['id']}/undo/").status_code == 409


def test_a_body_over_the_limit_is_a_400_and_nothing_is_stored(api, personas, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    body = json.dumps([output_payload(i, output="x" * 2_000) for i in range(60)])
    response = api(personas["ml_engineer"]).post(
        "/api/outputs/", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "too large" in response.data["detail"]
    assert Output.objects.count() == 0
