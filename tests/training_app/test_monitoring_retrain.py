"""The retraining trigger: from a live version (or its drift alert), a new dataset version with
the old data and the corrections since, and a training run continuing the live version."""

import random
from datetime import timedelta

import pytest

from core.models import AuditEvent
from datasets_app.models import DatasetVersionExample
from datasets_app.services import dataset_version_build
from governance.models import Channel
from monitoring.models import DriftAlert
from monitoring.services.drift import (
    channel_monitoring_save,
    drift_check,
    retraining_plan,
    retraining_start,
)
from reviews.models import Review
from tests.factories import OutputFactory, QueueFactory
from training_app.models import ModelVersion

from .governance_helpers import make_channel, make_version

WORDS = [
    "claim",
    "policy",
    "tow",
    "roof",
    "flood",
    "glass",
    "theft",
    "premium",
    "excess",
    "renewal",
    "broker",
    "invoice",
    "hail",
    "storm",
    "garage",
    "rental",
    "injury",
    "courier",
    "pet",
    "travel",
    "boat",
    "bike",
    "phone",
    "laptop",
    "window",
    "fence",
]


def sentence(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.sample(WORDS, 9)) + "?"


def review_resolved(*, seed, source, model_version, resolution, when, reviewer, correction=""):
    queue = QueueFactory(name="support")
    answer = f"Answer {sentence(seed + 1000)}"
    output = OutputFactory(
        input=[{"role": "user", "content": sentence(seed)}],
        output_text=answer,
        source=source,
        model_version=model_version,
        queue=queue,
        status="resolved",
        resolution=resolution,
        resolved_by="single",
        final_output=correction or answer,
        resolved_at=when,
    )
    Review.objects.create(
        output=output,
        reviewer=reviewer,
        queue=queue,
        decision={"approved": "approve", "corrected": "correct"}[resolution],
        original_output=answer,
        corrected_output=correction,
    )
    return output


@pytest.fixture
def live(personas, make_user, tiny_base_model, training_dirs, tmp_path):
    """A live version trained on a real dataset build of older reviewed answers."""
    from django.utils import timezone

    reviewer = make_user("reviewer", username="rev-old")
    for i in range(12):
        review_resolved(
            seed=i,
            source="support-bot",
            model_version="v0",
            resolution="approved",
            when=timezone.now() - timedelta(days=3),
            reviewer=reviewer,
        )
    dataset = dataset_version_build(
        user=personas["ml_engineer"], name="support", sources=["support-bot"], seed=1
    )
    version = make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, status="deployed"
    )
    channel = make_channel("production")
    Channel.objects.filter(pk=channel.pk).update(live_version=version)
    channel.refresh_from_db()
    return version, channel, dataset, reviewer


def corrections(version, dataset, reviewer, count, start=100):
    return [
        review_resolved(
            seed=start + i,
            source="channel:production",
            model_version=version.name,
            resolution="corrected",
            when=dataset.built_at + timedelta(seconds=1 + i),
            reviewer=reviewer,
            correction=f"Corrected: {sentence(start + i + 500)}",
        )
        for i in range(count)
    ]


def test_it_builds_from_old_data_and_new_corrections_and_continues_the_live_version(personas, live):
    version, _channel, dataset, reviewer = live
    old_outputs = set(
        DatasetVersionExample.objects.filter(version=dataset).values_list(
            "example__output_id", flat=True
        )
    )
    new = corrections(version, dataset, reviewer, 4)
    plan = retraining_plan(version=version)
    assert plan["new_corrections"] == 4 and plan["channels"] == ["production"]
    assert plan["options"]["sources"] == ["channel:production", "support-bot"]

    run = retraining_start(user=personas["ml_engineer"], version=version, enqueue=False)

    child = ModelVersion.objects.get(run=run)
    assert run.parent_version_id == version.pk and child.parent_id == version.pk
    assert child.status == "training"
    built = run.dataset_version
    assert built.status == "ready" and built.parent_id == dataset.pk and built.name == "support"
    members = DatasetVersionExample.objects.filter(version=built)
    used = set(members.values_list("example__output_id", flat=True))
    assert {o.pk for o in new} <= used, "every new correction is in the new dataset"
    assert old_outputs <= used, "and the old data stays"
    for output in new:
        member = members.get(example__output=output)
        assert member.processed_messages[-1]["content"] == output.final_output
    event = AuditEvent.objects.get(action="monitoring.retrain")
    assert event.payload["new_corrections"] == 4
    assert event.payload["dataset_version"] == built.pk


def test_it_starts_from_an_alert_and_records_it(personas, live):
    version, channel, dataset, reviewer = live
    channel_monitoring_save(
        user=personas["admin"], channel=channel, audit_sample_rate=0.1, min_samples=4
    )
    corrections(version, dataset, reviewer, 5)
    (alert,) = drift_check(version=version, channel=channel)
    assert alert.metric == "correction"
    run = retraining_start(
        user=personas["admin"], version=version, alert=alert, enqueue=False, name="support-v2"
    )
    alert = DriftAlert.objects.get(pk=alert.pk)
    assert alert.retrain_run_id == run.pk
    assert ModelVersion.objects.get(run=run).name == "support-v2"


def test_it_refuses_without_new_corrections(personas, live, api):
    version, *_ = live
    answer = api(personas["ml_engineer"]).post(
        f"/api/model-versions/{version.pk}/retrain/", {}, format="json"
    )
    assert answer.status_code == 409
    assert "No corrections" in answer.json()["detail"]


def test_it_refuses_a_version_that_is_not_live(personas, live, api):
    version, _channel, dataset, reviewer = live
    corrections(version, dataset, reviewer, 2)
    ModelVersion.objects.filter(pk=version.pk).update(status="approved")
    answer = api(personas["ml_engineer"]).post(
        f"/api/model-versions/{version.pk}/retrain/", {}, format="json"
    )
    assert answer.status_code == 409


@pytest.mark.parametrize("role", ["reviewer", "lead", "approver", "deployer", "auditor"])
def test_only_ml_engineers_and_admins_retrain(personas, live, api, client, role):
    version, _channel, dataset, reviewer = live
    corrections(version, dataset, reviewer, 2)
    answer = api(personas[role]).post(
        f"/api/model-versions/{version.pk}/retrain/", {}, format="json"
    )
    assert answer.status_code == 403
    client.force_login(personas[role])
    assert client.get(f"/training/monitoring/versions/{version.pk}/retrain/").status_code == 403
    assert client.post(f"/training/monitoring/versions/{version.pk}/retrain/").status_code == 403
    assert not ModelVersion.objects.filter(parent=version).exists()


def test_the_guided_page_builds_and_launches(personas, live, client, monkeypatch):
    from training_app.services import runs

    monkeypatch.setattr(runs, "_enqueue_training", lambda run_id: None)
    version, _channel, dataset, reviewer = live
    corrections(version, dataset, reviewer, 3)
    client.force_login(personas["ml_engineer"])
    page = client.get(f"/training/monitoring/versions/{version.pk}/retrain/")
    assert page.status_code == 200
    assert b"<strong>3</strong> corrections" in page.content
    answer = client.post(f"/training/monitoring/versions/{version.pk}/retrain/", {"name": ""})
    assert answer.status_code == 302
    child = ModelVersion.objects.get(parent=version)
    assert answer["Location"] == f"/training/runs/{child.run_id}/"


def test_bad_retrain_input_names_the_field(personas, live, api):
    version, *_ = live
    answer = api(personas["ml_engineer"]).post(
        f"/api/model-versions/{version.pk}/retrain/", {"alert": 999999}, format="json"
    )
    assert answer.status_code == 400 and answer.json()["field"] == "alert"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hyperparameters": {"num_epochs": -5}}, "hyperparameters.num_epochs"),
        ({"name": "bad\nname"}, "name"),
    ],
)
def test_a_refused_retrain_leaves_no_dataset_version_behind(personas, live, api, body, field):
    version, _channel, dataset, reviewer = live
    corrections(version, dataset, reviewer, 2)
    before = type(dataset).objects.count()
    response = api(personas["ml_engineer"]).post(
        f"/api/model-versions/{version.pk}/retrain/", body, format="json"
    )
    assert response.status_code == 400 and response.data["field"] == field
    assert type(dataset).objects.count() == before


def test_retraining_refits_the_schedule_and_keeps_what_the_launcher_chose(personas, live):
    version, _channel, dataset, reviewer = live
    config = dict(version.config)
    config["hyperparameters"] = {
        **config.get("hyperparameters", {}),
        "learning_rate": 5e-4,
        "batch_size": 4,
        "num_epochs": 9,
    }
    config["recipe"] = {"explicit": ["learning_rate"], "fitted": {"batch_size": 4}}
    ModelVersion.objects.filter(pk=version.pk).update(config=config)
    version.refresh_from_db()
    corrections(version, dataset, reviewer, 3)

    run = retraining_start(user=personas["ml_engineer"], version=version, enqueue=False)

    child = ModelVersion.objects.get(run=run)
    recipe = child.config["recipe"]
    assert child.config["hyperparameters"]["learning_rate"] == 5e-4
    assert "learning_rate" in recipe["explicit"]
    # The schedule the old data got is not carried over: it is fitted to the new data.
    assert "num_epochs" not in recipe["explicit"] and "batch_size" not in recipe["explicit"]
    assert child.config["hyperparameters"]["num_epochs"] != 9 or "num_epochs" in recipe["fitted"]


def test_retraining_a_version_trained_before_the_recipe_carries_everything_over(personas, live):
    version, _channel, dataset, reviewer = live
    config = {k: v for k, v in version.config.items() if k != "recipe"}
    config["hyperparameters"] = {**config.get("hyperparameters", {}), "num_epochs": 3}
    ModelVersion.objects.filter(pk=version.pk).update(config=config)
    version.refresh_from_db()
    corrections(version, dataset, reviewer, 2)

    run = retraining_start(user=personas["ml_engineer"], version=version, enqueue=False)

    child = ModelVersion.objects.get(run=run)
    assert child.config["hyperparameters"]["num_epochs"] == 3
    assert "num_epochs" in child.config["recipe"]["explicit"]
