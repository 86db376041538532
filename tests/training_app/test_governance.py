"""Sign-off, deployment, rollback and retirement: every step allowed and refused by role."""

import hashlib

import pytest

from core.audit import audit_verify
from core.models import AuditEvent
from governance.models import Approval, Channel, Deployment
from governance.services import channel_deploy, signoff_decide, signoff_request_create
from training_app.models import ModelVersion

from .governance_helpers import finish_evaluations, make_channel, make_version

NOT_REQUESTERS = ["reviewer", "lead", "approver", "deployer", "auditor", "outsider"]
NOT_APPROVERS = ["reviewer", "lead", "ml_engineer", "deployer", "auditor", "admin", "outsider"]
NOT_DEPLOYERS = ["reviewer", "lead", "ml_engineer", "approver", "auditor", "admin", "outsider"]


@pytest.fixture
def dataset(make_dataset_version, tiny_base_model, training_dirs):
    return make_dataset_version(2, 1)


@pytest.fixture
def version(personas, dataset, tmp_path):
    return make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)


@pytest.fixture
def channel(db):
    return make_channel("production")


def grant(user, group):
    """Add a role; drop the per-object role cache the earlier calls filled."""
    user.groups.add(group)
    user.__dict__.pop("_signoff_roles", None)
    return user


def request_signoff(api, user, version, channel="production"):
    return api(user).post(
        f"/api/model-versions/{version.pk}/signoff-requests/", {"channel": channel}, format="json"
    )


def decide(api, user, request_id, decision="approve", comment="Looks right.", **extra):
    return api(user).post(
        f"/api/signoff-requests/{request_id}/decisions/",
        {"decision": decision, "comment": comment, **extra},
        format="json",
    )


def approved(personas, version, channel):
    request = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    finish_evaluations(request)
    signoff_decide(user=personas["approver"], request=request, decision="approve", comment="ok")
    version.refresh_from_db()
    return version


# -- putting a version forward ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["ml_engineer", "admin"])
def test_ml_engineers_and_admins_put_a_version_forward(api, personas, version, channel, role):
    answer = request_signoff(api, personas[role], version)
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["status"] == "open" and body["channel"] == "production"
    # Nothing live: the eval split and the channel's regression set, against the base.
    assert sorted((e["split"], e["against"]) for e in body["evaluations"]) == [
        ("eval", "base model"),
        ("regression", "base model"),
    ]
    version.refresh_from_db()
    assert version.status == "awaiting_signoff"


@pytest.mark.parametrize("role", NOT_REQUESTERS)
def test_everyone_else_is_refused_putting_a_version_forward(api, personas, version, channel, role):
    assert request_signoff(api, personas[role], version).status_code == 403
    version.refresh_from_db()
    assert version.status == "evaluated"


def test_a_version_still_training_cannot_be_put_forward(api, personas, version, channel):
    ModelVersion.objects.filter(pk=version.pk).update(status="trained")
    answer = request_signoff(api, personas["ml_engineer"], version)
    assert answer.status_code == 409
    assert request_signoff(api, personas["ml_engineer"], version, "nope").json()["field"] == (
        "channel"
    )


def test_it_compares_with_the_live_version_on_eval_split_and_regression_set(
    personas, version, channel, dataset, tmp_path
):
    live = approved(personas, version, channel)
    channel_deploy(user=personas["deployer"], channel=channel, version=live)
    candidate = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, seed=1
    )
    request = signoff_request_create(
        user=personas["ml_engineer"], version=candidate, channel=channel, enqueue=False
    )
    assert sorted(request.evaluations.values_list("split", "reference__name", "status")) == [
        ("eval", live.name, "queued"),
        ("regression", live.name, "queued"),
    ]


# -- approving ---------------------------------------------------------------------------------


def test_an_approver_approves_with_a_comment(api, personas, version, channel):
    request_id = request_signoff(api, personas["ml_engineer"], version).json()["id"]
    finish_evaluations(version.signoff_requests.get())
    assert decide(api, personas["approver"], request_id, comment="  ").json()["field"] == "comment"
    answer = decide(api, personas["approver"], request_id)
    assert answer.status_code == 201, answer.json()
    assert answer.json()["status"] == "approved"
    version.refresh_from_db()
    assert version.status == "approved"
    actions = list(
        AuditEvent.objects.filter(object_id=str(version.pk)).values_list("action", flat=True)
    )
    assert actions[-2:] == ["signoff.approve", "model_version.approved"]
    assert audit_verify() > 0


@pytest.mark.parametrize("role", NOT_APPROVERS)
def test_every_other_role_is_refused_approving(api, personas, version, channel, role):
    request_id = request_signoff(api, personas["ml_engineer"], version).json()["id"]
    finish_evaluations(version.signoff_requests.get())
    assert decide(api, personas[role], request_id).status_code == 403
    assert not Approval.objects.exists()


def test_whoever_launched_the_run_cannot_approve_it(api, personas, version, channel, roles):
    launcher = personas["ml_engineer"]
    grant(launcher, roles["approver"])
    request_id = request_signoff(api, launcher, version).json()["id"]
    finish_evaluations(version.signoff_requests.get())
    answer = decide(api, launcher, request_id)
    assert answer.status_code == 403 and answer.json()["code"] == "separation_of_duties"
    version.refresh_from_db()
    assert version.status == "awaiting_signoff" and not Approval.objects.exists()


def test_whoever_built_the_dataset_cannot_approve_it(api, personas, version, channel, roles):
    builder = version.dataset_version.created_by
    grant(builder, roles["approver"])
    request_id = request_signoff(api, personas["ml_engineer"], version).json()["id"]
    finish_evaluations(version.signoff_requests.get())
    answer = decide(api, builder, request_id)
    assert answer.status_code == 403 and "dataset" in answer.json()["detail"]


def test_a_policy_of_two_approvals_needs_two_different_approvers(api, personas, version, make_user):
    make_channel("production", approvals_required=2)
    request_id = request_signoff(api, personas["ml_engineer"], version).json()["id"]
    finish_evaluations(version.signoff_requests.get())
    assert decide(api, personas["approver"], request_id).json()["status"] == "open"
    again = decide(api, personas["approver"], request_id)
    assert again.status_code == 409
    second = make_user("approver", username="approver2")
    assert decide(api, second, request_id).json()["status"] == "approved"
    version.refresh_from_db()
    assert version.status == "approved"


def test_a_rejection_rejects_the_version_for_good(api, personas, version, channel):
    request_id = request_signoff(api, personas["ml_engineer"], version).json()["id"]
    assert decide(api, personas["approver"], request_id, "reject", "").json()["field"] == "comment"
    answer = decide(api, personas["approver"], request_id, "reject", "Wrong tone.")
    assert answer.json()["status"] == "rejected"
    version.refresh_from_db()
    assert version.status == "rejected"
    assert request_signoff(api, personas["ml_engineer"], version).status_code == 409
    deploy = api(personas["deployer"]).post(
        "/api/channels/production/deploy/", {"version": str(version.pk)}, format="json"
    )
    assert deploy.status_code == 409


def test_approval_waits_for_the_evaluations(api, personas, version, channel):
    request_id = request_signoff(api, personas["ml_engineer"], version).json()["id"]
    answer = decide(api, personas["approver"], request_id)
    assert answer.status_code == 409 and "still running" in answer.json()["detail"]


# -- the regression gate -----------------------------------------------------------------------


@pytest.fixture
def against_live(api, personas, version, dataset, tmp_path):
    """A candidate put forward on a channel where `version` is live."""

    def make(**policy):
        channel = make_channel("production", **policy)
        live = approved(personas, version, channel)
        channel_deploy(user=personas["deployer"], channel=channel, version=live)
        candidate = make_version(
            launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, seed=2
        )
        request_id = request_signoff(api, personas["ml_engineer"], candidate).json()["id"]
        return candidate, request_id

    return make


def test_the_gate_passes_within_tolerance(api, personas, against_live):
    candidate, request_id = against_live()
    finish_evaluations(candidate.signoff_requests.get(), eval_loss=1.05, rouge_l=0.47)
    answer = decide(api, personas["approver"], request_id)
    assert answer.status_code == 201 and answer.json()["status"] == "approved"
    gate = answer.json()["gate"]
    assert gate["passed"] and {c["metric"] for c in gate["checks"]} >= {"eval_loss", "rouge_l"}


def test_the_gate_refuses_a_regression_unless_overridden_with_a_reason(api, personas, against_live):
    candidate, request_id = against_live()
    finish_evaluations(candidate.signoff_requests.get(), eval_loss=1.5)
    refused = decide(api, personas["approver"], request_id)
    assert refused.status_code == 409 and refused.json()["code"] == "regression_gate_failed"
    assert "eval_loss" in refused.json()["detail"]
    no_reason = decide(api, personas["approver"], request_id, override=True)
    assert no_reason.status_code == 400 and no_reason.json()["field"] == "override_reason"
    answer = decide(
        api, personas["approver"], request_id, override=True, override_reason="Loss is noisy."
    )
    assert answer.status_code == 201 and answer.json()["status"] == "approved"
    approval = Approval.objects.get(request_id=request_id)
    assert approval.override and approval.override_reason == "Loss is noisy."
    assert not approval.gate["passed"]
    assert AuditEvent.objects.filter(action="signoff.override").count() == 1


def test_a_policy_can_forbid_overrides(api, personas, against_live):
    candidate, request_id = against_live(allow_override=False)
    finish_evaluations(candidate.signoff_requests.get(), rouge_l=0.1)
    answer = decide(api, personas["approver"], request_id, override=True, override_reason="x")
    assert answer.status_code == 403
    candidate.refresh_from_db()
    assert candidate.status == "awaiting_signoff"


# -- deploying, rolling back, retiring ---------------------------------------------------------


def deploy(api, user, version, channel="production"):
    return api(user).post(
        f"/api/channels/{channel}/deploy/", {"version": str(version.pk)}, format="json"
    )


def test_a_deployer_deploys_an_approved_version(api, personas, version, channel):
    approved(personas, version, channel)
    answer = deploy(api, personas["deployer"], version)
    assert answer.status_code == 201, answer.json()
    version.refresh_from_db()
    channel.refresh_from_db()
    assert version.status == "deployed" and channel.live_version == version
    live = api(personas["auditor"]).get("/api/channels/production/").json()["live"]
    assert live["name"] == version.name
    files = {f["name"]: f for f in live["adapter"]["files"]}
    assert set(files) == {"adapter_model.safetensors", "adapter_config.json"}
    download = api(personas["deployer"]).get(files["adapter_model.safetensors"]["url"])
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == files["adapter_model.safetensors"]["sha256"]


@pytest.mark.parametrize("role", NOT_DEPLOYERS)
def test_every_other_role_is_refused_deploying(api, personas, version, channel, role):
    approved(personas, version, channel)
    assert deploy(api, personas[role], version).status_code == 403
    assert not Deployment.objects.exists()


def test_an_unapproved_version_is_refused(api, personas, version, channel):
    answer = deploy(api, personas["deployer"], version)
    assert answer.status_code == 409 and "approved" in answer.json()["detail"]
    assert deploy(api, personas["deployer"], version, "nope").status_code == 404
    bad = api(personas["deployer"]).post(
        "/api/channels/production/deploy/", {"version": "not-a-uuid"}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["field"] == "version"


def test_approval_for_one_channel_does_not_release_to_another(api, personas, version, channel):
    approved(personas, version, channel)
    make_channel("staging")
    assert deploy(api, personas["deployer"], version, "staging").status_code == 409


def test_a_tampered_artifact_is_refused(api, personas, version, channel):
    approved(personas, version, channel)
    from pathlib import Path

    (Path(version.artifact_dir) / "adapter_model.safetensors").write_bytes(b"swapped")
    answer = deploy(api, personas["deployer"], version)
    assert answer.status_code == 409 and answer.json()["code"] == "artifact_tampered"
    assert answer.json()["files"] == ["adapter_model.safetensors"]
    (Path(version.artifact_dir) / "adapter_model.safetensors").write_bytes(b"weights-0")
    (Path(version.artifact_dir) / "extra.bin").write_bytes(b"pickle")
    assert deploy(api, personas["deployer"], version).json()["code"] == "artifact_tampered"
    channel.refresh_from_db()
    assert channel.live_version is None


def test_rollback_returns_the_channel_to_the_version_before(
    api, personas, version, channel, dataset, tmp_path
):
    first = approved(personas, version, channel)
    channel_deploy(user=personas["deployer"], channel=channel, version=first)
    second = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, seed=3
    )
    second = approved(personas, second, channel)
    channel_deploy(user=personas["deployer"], channel=channel, version=second)
    first.refresh_from_db()
    assert first.status == "approved"  # taken off its only channel, still releasable

    client = api(personas["deployer"])
    assert api(personas["approver"]).post("/api/channels/production/rollback/").status_code == 403
    answer = client.post("/api/channels/production/rollback/", {"comment": "bad answers"})
    assert answer.status_code == 201 and answer.json()["version"]["name"] == first.name
    channel.refresh_from_db()
    first.refresh_from_db()
    second.refresh_from_db()
    assert channel.live_version == first
    assert (first.status, second.status) == ("deployed", "approved")
    # Nothing was live before the first version: rolling back again takes the channel offline.
    again = client.post("/api/channels/production/rollback/", {"comment": "stop it"})
    assert again.status_code == 201 and again.json()["action"] == "withdraw"
    channel.refresh_from_db()
    first.refresh_from_db()
    assert channel.live_version is None and first.status == "approved"
    assert client.post("/api/channels/production/rollback/").status_code == 409
    history = client.get("/api/channels/production/history/").json()["results"]
    assert [(h["action"], h["version"]["name"]) for h in history] == [
        ("withdraw", first.name),
        ("rollback", first.name),
        ("deploy", second.name),
        ("deploy", first.name),
    ]
    assert AuditEvent.objects.filter(action="channel.rollback").count() == 1
    assert AuditEvent.objects.filter(action="channel.withdraw").count() == 1
    assert audit_verify() > 0
    # And it can be released again: deploying after a withdrawal starts a new history.
    channel_deploy(user=personas["deployer"], channel=channel, version=first)
    channel.refresh_from_db()
    assert channel.live_version == first


def test_retiring(api, personas, version, channel):
    approved(personas, version, channel)
    channel_deploy(user=personas["deployer"], channel=channel, version=version)
    url = f"/api/model-versions/{version.pk}/retire/"
    assert api(personas["approver"]).post(url, {"comment": "old"}).status_code == 403
    assert api(personas["deployer"]).post(url, {"comment": ""}).json()["field"] == "comment"
    assert api(personas["deployer"]).post(url, {"comment": "old"}).status_code == 409  # live
    Channel.objects.filter(pk=channel.pk).update(live_version=None, live_deployment=None)
    answer = api(personas["admin"]).post(url, {"comment": "superseded"})
    assert answer.status_code == 200 and answer.json()["status"] == "retired"
    assert deploy(api, personas["deployer"], version).status_code == 409


# -- the admin offers no way around ------------------------------------------------------------


def test_the_admin_is_read_only_for_the_whole_lifecycle(client, personas, version, channel, roles):
    launcher = personas["ml_engineer"]
    launcher.is_staff = launcher.is_superuser = True
    launcher.save()
    grant(launcher, roles["approver"])
    request = signoff_request_create(user=launcher, version=version, channel=channel, enqueue=False)
    finish_evaluations(request)
    client.force_login(launcher)
    base = "/admin/training_app"
    assert client.get(f"{base}/modelversion/{version.pk}/change/").status_code == 200
    changed = client.post(f"{base}/modelversion/{version.pk}/change/", {"status": "approved"})
    assert changed.status_code == 403
    governance = "/admin/governance"
    assert client.post(f"{governance}/approval/add/", {"request": request.pk}).status_code == 403
    assert client.post(f"{governance}/signoffrequest/{request.pk}/change/", {}).status_code == 403
    assert client.post(f"{governance}/channel/{channel.pk}/change/", {}).status_code == 403
    # The admin address from before governance had its own app still leads there (and only
    # leads: a POST to it changes nothing either).
    moved = client.get(f"{base}/channel/{channel.pk}/change/?from=bookmark")
    assert moved.status_code == 301
    assert moved["Location"] == f"{governance}/channel/{channel.pk}/change/?from=bookmark"
    assert client.post(f"{base}/approval/add/", {"request": request.pk}).status_code == 301
    version.refresh_from_db()
    assert version.status == "awaiting_signoff" and not Approval.objects.exists()
