"""The regression gate on a channel's first release: with nothing live, the candidate is held
to what it was trained from (its parent, else the bare base model), on the eval split and the
channel's regression set, with the same tolerances as against a live version."""

import pytest

from governance.services import signoff_gate, signoff_request_create
from training_app.models import Evaluation, ModelVersion

from .governance_helpers import make_channel, make_version

# What issue 17's new user saw: the candidate worse than the base model it was trained from.
BASE = {"eval_loss": 3.61, "perplexity": 37.0, "rouge_l": 0.152, "token_f1": 0.30}
WORSE = {"eval_loss": 5.41, "perplexity": 223.6, "rouge_l": 0.137, "token_f1": 0.29}
BETTER = {"eval_loss": 2.90, "perplexity": 18.2, "rouge_l": 0.310, "token_f1": 0.41}


@pytest.fixture
def dataset(make_dataset_version, tiny_base_model, training_dirs):
    return make_dataset_version(2, 1)


@pytest.fixture
def version(personas, dataset, tmp_path):
    return make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)


@pytest.fixture
def channel(db):
    return make_channel("production")


def put_forward(api, personas, version, channel="production") -> int:
    answer = api(personas["ml_engineer"]).post(
        f"/api/model-versions/{version.pk}/signoff-requests/", {"channel": channel}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    return answer.json()["id"]


def finish(request_id, *, candidate, reference=BASE, splits=("eval", "regression")) -> None:
    """Mark the request's comparisons on `splits` done with these scores."""
    finished = Evaluation.objects.filter(signoff_request_id=request_id, split__in=splits).update(
        status="done",
        metrics={"candidate": candidate, "reference": reference, "examples": 2, "generated": 2},
    )
    assert finished == len(splits)


def decide(api, personas, request_id, **extra):
    return api(personas["approver"]).post(
        f"/api/signoff-requests/{request_id}/decisions/",
        {"decision": "approve", "comment": "First release.", **extra},
        format="json",
    )


def test_a_first_release_is_compared_with_the_base_on_both_splits(api, personas, version, channel):
    request_id = put_forward(api, personas, version)
    evaluations = Evaluation.objects.filter(signoff_request_id=request_id)
    assert sorted(evaluations.values_list("split", "reference", "status")) == [
        ("eval", None, "queued"),
        ("regression", None, "queued"),
    ]
    gate = api(personas["approver"]).get(f"/api/signoff-requests/{request_id}/").json()["gate"]
    assert gate["compared_with"] == {
        "kind": "base",
        "name": version.base_model.name,
        "label": f"the base model {version.base_model.name}",
    }
    assert gate["pending"] == 2 and not gate["passed"]


def test_a_first_release_worse_than_its_base_fails_the_gate(api, personas, version, channel):
    request_id = put_forward(api, personas, version)
    finish(request_id, candidate=WORSE)
    refused = decide(api, personas, request_id)
    assert refused.status_code == 409, refused.json()
    assert refused.json()["code"] == "regression_gate_failed"
    base = version.base_model.name
    gate = api(personas["approver"]).get(f"/api/signoff-requests/{request_id}/").json()["gate"]
    assert not gate["passed"] and gate["compared_with"]["kind"] == "base"
    failing = {(c["split"], c["metric"]) for c in gate["checks"] if not c["passed"]}
    # eval_loss worse by 1.8 (tolerance 0.1); ROUGE-L by 0.015 and token F1 by 0.01 are within 0.05.
    assert failing == {("eval", "eval_loss"), ("regression", "eval_loss")}
    assert sorted(gate["problems"]) == [
        f"eval_loss on the {split} split is worse than the base model {base} by 1.8000 "
        "(tolerance 0.1)"
        for split in ("eval", "regression")
    ]
    assert f"the base model {base}" in refused.json()["detail"]
    assert ModelVersion.objects.get(pk=version.pk).status == "awaiting_signoff"


def test_a_first_release_better_than_its_base_passes_the_gate(api, personas, version, channel):
    request_id = put_forward(api, personas, version)
    finish(request_id, candidate=BETTER)
    answer = decide(api, personas, request_id)
    assert answer.status_code == 201, answer.json()
    assert answer.json()["status"] == "approved"
    gate = answer.json()["gate"]
    assert gate["passed"] and gate["compared_with"]["kind"] == "base"
    assert {(c["split"], c["metric"]) for c in gate["checks"]} >= {
        ("eval", "eval_loss"),
        ("regression", "rouge_l"),
    }
    assert gate["checks"][0]["live"] in BASE.values()


def test_a_first_release_with_a_parent_is_compared_with_the_parent(
    api, personas, version, dataset, channel, tmp_path
):
    parent = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, seed=1, name="v0"
    )
    ModelVersion.objects.filter(pk=version.pk).update(parent=parent)
    request_id = put_forward(api, personas, version)
    assert set(
        Evaluation.objects.filter(signoff_request_id=request_id).values_list("reference", flat=True)
    ) == {parent.pk}
    finish(request_id, candidate=WORSE)
    refused = decide(api, personas, request_id)
    assert refused.status_code == 409
    assert f"worse than its parent version {parent.name} by" in refused.json()["detail"]
    gate = api(personas["approver"]).get(f"/api/signoff-requests/{request_id}/").json()["gate"]
    assert gate["compared_with"]["kind"] == "base"
    assert gate["compared_with"]["name"] == parent.name


def test_a_regression_on_one_split_is_enough_to_fail(api, personas, version, channel):
    request_id = put_forward(api, personas, version)
    finish(request_id, candidate=BETTER, splits=("eval",))
    finish(request_id, candidate=WORSE, splits=("regression",))
    gate = api(personas["approver"]).get(f"/api/signoff-requests/{request_id}/").json()["gate"]
    assert not gate["passed"]
    assert [p.split(" by ")[0] for p in gate["problems"]] == [
        f"eval_loss on the regression split is worse than the base model {version.base_model.name}"
    ]


def test_with_no_comparison_at_all_the_gate_says_so_and_does_not_pass(personas, version, channel):
    request = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=channel, enqueue=False
    )
    # A request made before first releases were compared: no evaluation to read.
    Evaluation.objects.filter(signoff_request=request).delete()
    gate = signoff_gate(request=request)
    assert not gate["passed"] and gate["pending"] == 0 and gate["checks"] == []
    assert gate["problems"] == [
        f"No finished comparison with the base model {version.base_model.name}: "
        "there was nothing to compare against."
    ]


def test_the_approver_sees_what_the_gate_compared_with(client, api, personas, version, channel):
    request_id = put_forward(api, personas, version)
    finish(request_id, candidate=WORSE)
    client.force_login(personas["approver"])
    page = client.get(f"/training/signoff/{request_id}/").content.decode()
    base = version.base_model.name
    assert "Compared with the base it was trained from (nothing is live on production): " in page
    assert f"<strong>{base}</strong>" in page
    assert f"<th>{base}</th>" in page  # the checks' reference column
    assert f"eval_loss on the regression split is worse than the base model {base}" in page
