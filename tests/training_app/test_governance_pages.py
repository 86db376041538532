"""Governance pages and the audit export: what each role sees, and that the pages go through
the same refusals as the API."""

import itertools
import json

import pytest

from core.models import AuditEvent
from governance.models import Approval, Deployment
from governance.services import channel_deploy, signoff_decide, signoff_request_create

from .governance_helpers import finish_evaluations, make_channel, make_version


@pytest.fixture
def dataset(make_dataset_version, tiny_base_model, training_dirs):
    return make_dataset_version(2, 1)


@pytest.fixture
def request_(personas, dataset, tmp_path):
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    channel = make_channel("production")
    signoff = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    finish_evaluations(signoff)
    return signoff


def test_the_approver_sees_the_report_and_decides_on_the_page(client, personas, request_):
    client.force_login(personas["approver"])
    page = client.get(f"/training/signoff/{request_.pk}/").content.decode()
    assert "Evaluation report" in page and "Where they differ" in page and "<ins>" in page
    assert "Record decision" in page
    url = f"/training/signoff/{request_.pk}/decide/"
    client.post(url, {"decision": "approve", "comment": ""})
    assert not Approval.objects.exists()
    client.post(url, {"decision": "approve", "comment": "Fine."})
    request_.refresh_from_db()
    assert request_.status == "approved"


def test_self_approval_is_impossible_through_the_page(client, personas, request_, roles):
    launcher = personas["ml_engineer"]
    launcher.groups.add(roles["approver"])
    client.force_login(launcher)
    page = client.get(f"/training/signoff/{request_.pk}/").content.decode()
    assert "Record decision" not in page and "someone else must approve" in page
    answer = client.post(
        f"/training/signoff/{request_.pk}/decide/", {"decision": "approve", "comment": "Mine."}
    )
    assert answer.status_code == 403
    assert not Approval.objects.exists()


def test_put_forward_deploy_and_roll_back_through_the_pages(client, personas, dataset, tmp_path):
    channel = make_channel("production")
    versions = []
    for seed in (0, 1):
        version = make_version(
            launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, seed=seed
        )
        client.force_login(personas["ml_engineer"])
        answer = client.post(f"/training/versions/{version.pk}/signoff/", {"channel": "production"})
        signoff = version.signoff_requests.get()
        assert answer.status_code == 302 and answer["Location"].endswith(f"/signoff/{signoff.pk}/")
        finish_evaluations(signoff)
        signoff_decide(user=personas["approver"], request=signoff, decision="approve", comment="k")
        versions.append(version)
    client.force_login(personas["approver"])
    assert (
        client.post(
            "/training/channels/production/deploy/", {"version": versions[0].pk}
        ).status_code
        == 403
    )
    client.force_login(personas["deployer"])
    for version in versions:
        client.post("/training/channels/production/deploy/", {"version": version.pk})
    page = client.get("/training/channels/production/").content.decode()
    assert f"Roll back to {versions[0].name}" in page
    client.post("/training/channels/production/rollback/", {"comment": "regressed"})
    channel.refresh_from_db()
    assert channel.live_version == versions[0]
    assert list(Deployment.objects.values_list("action", flat=True)) == [
        "rollback", "deploy", "deploy"
    ]  # fmt: skip
    assert "regressed" in client.get("/training/channels/production/").content.decode()
    assert versions[0].name in client.get("/training/channels/").content.decode()


@pytest.mark.parametrize("role", ["reviewer", "lead", "outsider"])
def test_governance_pages_are_closed_to_the_review_roles(client, personas, request_, role):
    client.force_login(personas[role])
    version = request_.version
    for url in (
        f"/training/signoff/{request_.pk}/",
        f"/training/versions/{version.pk}/compliance/",
        f"/training/versions/{version.pk}/lineage/",
        "/training/channels/",
        "/training/audit/",
    ):
        assert client.get(url).status_code == 403, url


def test_auditors_read_everything_and_change_nothing(client, api, personas, request_):
    client.force_login(personas["auditor"])
    version = request_.version
    for url in (
        f"/training/signoff/{request_.pk}/",
        f"/training/versions/{version.pk}/governance/",
        f"/training/versions/{version.pk}/compliance/",
        f"/training/versions/{version.pk}/compliance/?format=json",
        f"/training/versions/{version.pk}/lineage/",
        "/training/channels/production/",
        "/training/audit/?action=signoff.requested",
    ):
        assert client.get(url).status_code == 200, url
    page = client.get(f"/training/signoff/{request_.pk}/").content.decode()
    assert "Record decision" not in page
    auditor = api(personas["auditor"])
    assert auditor.post(f"/api/signoff-requests/{request_.pk}/decisions/", {
        "decision": "approve", "comment": "x"}).status_code == 403  # fmt: skip
    assert auditor.post("/api/channels/production/rollback/").status_code == 403
    assert client.post(
        f"/training/versions/{version.pk}/retire/", {"comment": "x"}
    ).status_code == (403)


def test_the_audit_log_exports_as_jsonl_with_its_hashes(api, personas, request_):
    client = api(personas["auditor"])
    answer = client.get("/api/audit/export/")
    assert answer.status_code == 200
    lines = [json.loads(line) for line in b"".join(answer.streaming_content).splitlines()]
    assert [e["seq"] for e in lines] == list(
        AuditEvent.objects.order_by("seq").values_list("seq", flat=True)
    )
    for before, after in itertools.pairwise(lines):
        assert after["prev_hash"] == before["hash"]
    filtered = client.get("/api/audit/export/?action=signoff.requested")
    rows = [json.loads(x) for x in b"".join(filtered.streaming_content).splitlines()]
    assert [r["action"] for r in rows] == ["signoff.requested"]
    assert client.get("/api/audit/export/?since=yesterday").json()["field"] == "since"
    for role in ("approver", "deployer", "ml_engineer", "reviewer"):
        assert api(personas[role]).get("/api/audit/export/").status_code == 403


def test_channel_list_for_external_serving(api, personas, request_):
    signoff_decide(user=personas["approver"], request=request_, decision="approve", comment="k")
    channel_deploy(user=personas["deployer"], channel=request_.channel, version=request_.version)
    listing = api(personas["deployer"]).get("/api/channels/").json()["results"]
    assert listing[0]["live"]["name"] == request_.version.name
    assert listing[0]["policy"]["approvals_required"] == 1
    assert api(personas["reviewer"]).get("/api/channels/production/").status_code == 403
    assert api(personas["deployer"]).get("/api/channels/nope/").status_code == 404


def test_a_malformed_version_id_on_the_deploy_form_is_a_message_not_a_500(client, personas):
    from .governance_helpers import make_channel

    make_channel("production")
    client.force_login(personas["deployer"])
    response = client.post("/training/channels/production/deploy/", {"version": "not-a-uuid"})
    assert response.status_code == 302
