"""Each role lands on its own home: approvers on what awaits their sign-off, deployers on what
is approved and where it could go, auditors on the chain and the versions, ML engineers on
runs and datasets; reviewers keep their queues (issue 18)."""

import pytest
from django.urls import reverse

from governance.services import signoff_decide, signoff_request_create

from .governance_helpers import finish_evaluations, make_channel, make_version
from .live_helpers import register_fake_base_model

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = pytest.mark.once

INBOX = "Awaiting your sign-off"


@pytest.fixture
def dataset(make_dataset_version, training_dirs, tmp_path):
    register_fake_base_model(tmp_path / "base")
    return make_dataset_version(2, 1)


@pytest.fixture
def open_request(personas, dataset, tmp_path):
    version = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, name="harbor-v2"
    )
    signoff = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=make_channel(), enqueue=False
    )
    finish_evaluations(signoff)
    return signoff


def home(client, user) -> str:
    client.force_login(user)
    return client.get(reverse("home")).content.decode()


def test_the_approver_lands_on_the_requests_awaiting_their_sign_off(client, personas, open_request):
    page = home(client, personas["approver"])
    assert INBOX in page
    assert reverse("training:signoff", args=[open_request.pk]) in page
    assert "harbor-v2 for production" in page and "Not yours to decide" not in page


def test_a_request_already_decided_by_the_approver_leaves_their_inbox(
    client, personas, open_request, make_user
):
    open_request.policy = {**open_request.policy, "approvals_required": 2}
    open_request.save(update_fields=["policy"])
    signoff_decide(
        user=personas["approver"], request=open_request, decision="approve", comment="Fine."
    )
    page = home(client, personas["approver"])
    assert INBOX in page and reverse("training:signoff", args=[open_request.pk]) not in page
    other = make_user("approver", username="approver2")
    assert reverse("training:signoff", args=[open_request.pk]) in home(client, other)


def test_a_reviewer_only_user_sees_queues_and_no_approver_inbox(client, personas, open_request):
    page = home(client, personas["reviewer"])
    assert INBOX not in page and "<h1>Queues</h1>" in page
    assert reverse("training:signoff", args=[open_request.pk]) not in page


def test_an_approver_who_trained_the_version_sees_it_is_not_theirs_to_decide(
    client, personas, roles, open_request
):
    launcher = personas["ml_engineer"]
    launcher.groups.add(roles["approver"])
    page = home(client, launcher)
    assert INBOX in page and reverse("training:signoff", args=[open_request.pk]) in page
    assert "Not yours to decide" in page


def test_the_deployer_sees_approved_versions_and_the_channels_live_version(
    client, personas, open_request, dataset, tmp_path
):
    signoff_decide(
        user=personas["approver"], request=open_request, decision="approve", comment="Fine."
    )
    page = home(client, personas["deployer"])
    assert "Approved, ready to deploy" in page and INBOX not in page
    section = page.split("Approved, ready to deploy")[1].split("</section>")[0]
    assert "harbor-v2" in section and "production" in section and "nothing" in section
    assert reverse("training:channel", args=["production"]) in section


def test_the_auditor_sees_versions_and_the_chain_with_a_way_to_verify_it(
    client, personas, open_request
):
    page = home(client, personas["auditor"])
    assert "Audit chain and versions" in page and "published head is #" in page
    assert "Verify the chain" in page and "harbor-v2" in page
    assert INBOX not in page


def test_the_ml_engineer_sees_runs_and_datasets(client, personas, open_request, dataset):
    page = home(client, personas["ml_engineer"])
    assert "Training runs and datasets" in page
    assert reverse("training:run", args=[open_request.version.run_id]) in page
    assert reverse("datasets:detail", args=[dataset.pk]) in page
    assert INBOX not in page


def test_a_user_with_several_roles_sees_each_roles_sections(client, personas, roles, open_request):
    both = personas["reviewer2"]
    both.groups.add(roles["approver"], roles["deployer"])
    page = home(client, both)
    assert "Review queues" in page and INBOX in page and "Approved, ready to deploy" in page


def test_the_decision_panel_comes_before_the_long_evaluation_report(client, personas, open_request):
    client.force_login(personas["approver"])
    page = client.get(reverse("training:signoff", args=[open_request.pk])).content.decode()
    assert "Record decision" in page
    assert page.index('id="decision-panel"') < page.index("Evaluation report")
    assert page.index("Record decision") < page.index("Evaluation report")
