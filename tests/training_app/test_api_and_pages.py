"""The training API and pages: roles, validation answers, and what the pages show."""

import pytest

from core.roles import Role
from training_app.models import Evaluation, ModelVersion, TrainingRun
from training_app.services import training_run_create

NOT_LAUNCHERS = ["reviewer", "lead", "approver", "deployer", "auditor", "outsider"]


@pytest.fixture
def dataset(make_dataset_version, tiny_base_model, training_dirs):
    return make_dataset_version(2, 1)


def post_run(client, dataset, **extra):
    body = {"dataset_version": dataset.pk, "hyperparameters": {"num_epochs": 1}, **extra}
    return client.post("/api/training-runs/", body, format="json")


@pytest.mark.parametrize("role", ["ml_engineer", "admin"])
def test_ml_engineers_and_admins_launch_through_the_api(api, personas, dataset, role):
    answer = post_run(api(personas[role]), dataset)
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["status"] == "queued" and body["hyperparameters"]["num_epochs"] == 1
    assert body["model_version"]["status"] == "training"
    detail = api(personas["auditor"]).get(f"/api/training-runs/{body['id']}/")
    assert detail.status_code == 200 and detail.json()["id"] == body["id"]


def test_the_api_fits_what_the_request_left_out_and_says_why(api, personas, dataset):
    answer = post_run(api(personas["ml_engineer"]), dataset)  # num_epochs 1, 2 examples
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    recipe = body["recipe"]
    assert recipe["explicit"] == ["num_epochs"] and body["hyperparameters"]["num_epochs"] == 1
    assert body["hyperparameters"]["batch_size"] == recipe["fitted"]["batch_size"] == 2
    assert recipe["total_steps"] == 1 and recipe["train_examples"] == 2 and recipe["reasons"]
    version = api(personas["auditor"]).get(f"/api/model-versions/{body['model_version']['id']}/")
    assert version.json()["config"]["recipe"] == recipe
    # An explicit cadence is taken as given.
    answer = post_run(
        api(personas["ml_engineer"]),
        dataset,
        hyperparameters={"num_epochs": 1, "eval_every_steps": 1},
    )
    assert answer.json()["hyperparameters"]["eval_every_steps"] == 1


@pytest.mark.parametrize("role", NOT_LAUNCHERS)
def test_every_other_role_is_refused(api, personas, dataset, role):
    assert post_run(api(personas[role]), dataset).status_code == 403
    assert not TrainingRun.objects.exists()


def test_anonymous_is_refused(api, dataset):
    assert post_run(api(), dataset).status_code in (401, 403)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"hyperparameters": {"lora_r": -1}}, "hyperparameters.lora_r"),
        ({"hyperparameters": {"learning_rate": 5}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"nonsense": 1}}, "hyperparameters.nonsense"),
        ({"hyperparameters": {"eval_every_steps": 0}}, "hyperparameters.eval_every_steps"),
        ({"hyperparameters": {"eval_every_steps": 2.5}}, "hyperparameters.eval_every_steps"),
        ({"hyperparameters": {"eval_every_steps": "often"}}, "hyperparameters.eval_every_steps"),
        ({"base_model": "no-such-model"}, "base_model"),
        ({"parent_version": "00000000-0000-0000-0000-000000000000"}, "parent_version"),
    ],
)
def test_invalid_requests_answer_400_naming_the_field(api, personas, dataset, extra, field):
    answer = post_run(api(personas["ml_engineer"]), dataset, **extra)
    assert answer.status_code == 400
    assert answer.json()["field"] == field


def test_unknown_dataset_version_is_400(api, personas, dataset):
    answer = api(personas["ml_engineer"]).post(
        "/api/training-runs/", {"dataset_version": 999999}, format="json"
    )
    assert answer.status_code == 400 and answer.json()["field"] == "dataset_version"


def test_cancel_through_the_api(api, personas, dataset):
    run_id = post_run(api(personas["ml_engineer"]), dataset).json()["id"]
    assert api(personas["approver"]).post(f"/api/training-runs/{run_id}/cancel/").status_code == 403
    answer = api(personas["admin"]).post(f"/api/training-runs/{run_id}/cancel/")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    again = api(personas["admin"]).post(f"/api/training-runs/{run_id}/cancel/")
    assert again.status_code == 409


def _finished_version(personas, dataset) -> ModelVersion:
    run = training_run_create(
        user=personas["ml_engineer"],
        dataset_version=dataset,
        enqueue=False,
        hyperparameters={"num_epochs": 1},
    )
    version = run.model_version
    ModelVersion.objects.filter(pk=version.pk).update(
        status="evaluated",
        manifest={"adapter_model.safetensors": "ab" * 32},
        metrics={"best_eval_loss": 1.25},
    )
    Evaluation.objects.create(
        version=version,
        dataset_version=dataset,
        status="done",
        metrics={
            "candidate": {
                "eval_loss": 1.2,
                "perplexity": 3.3,
                "exact_match": 0.5,
                "token_f1": 0.8,
                "rouge_l": 0.7,
                "length_ratio": 1.0,
            },
            "reference": {
                "eval_loss": 2.4,
                "perplexity": 11.0,
                "exact_match": 0.0,
                "token_f1": 0.3,
                "rouge_l": 0.2,
                "length_ratio": 1.9,
            },
            "examples": 1,
            "generated": 1,
        },
        samples=[
            {
                "prompt": "Can I change my payment date?",
                "expected": "Yes. Next step: go",
                "candidate": "Yes. Next step: go",
                "reference": "I am SmolLM",
                "candidate_rouge_l": 1.0,
                "reference_rouge_l": 0.0,
            }
        ],
    )
    return version


def test_model_versions_list_and_detail(api, personas, dataset, django_assert_max_num_queries):
    for _ in range(3):
        _finished_version(personas, dataset)
    client = api(personas["approver"])
    with django_assert_max_num_queries(8):
        listing = client.get("/api/model-versions/")
    assert listing.status_code == 200 and listing.json()["count"] == 3
    version_id = listing.json()["results"][0]["id"]
    detail = client.get(f"/api/model-versions/{version_id}/").json()
    assert detail["evaluations"][0]["metrics"]["candidate"]["rouge_l"] == 0.7
    assert detail["base_model_ref"]["weight_sha256"]
    assert api(personas["reviewer"]).get("/api/model-versions/").status_code == 403
    assert (
        client.get("/api/model-versions/00000000-0000-0000-0000-000000000000/").status_code == 404
    )


def test_pages_show_runs_versions_and_the_comparison(client, personas, dataset):
    version = _finished_version(personas, dataset)
    client.force_login(personas["ml_engineer"])
    assert b"Launch a training run" in client.get("/training/").content
    run_page = client.get(f"/training/runs/{version.run_id}/")
    assert run_page.status_code == 200
    assert b"<progress" in run_page.content and b"hx-get" in run_page.content
    assert b"Cancel run" in run_page.content
    assert client.get(f"/training/runs/{version.run_id}/progress/").status_code == 200
    compare = client.get(f"/training/versions/{version.pk}/").content.decode()
    assert "<svg" in compare and "rouge_l" in compare and "I am SmolLM" in compare
    assert version.name in client.get("/training/versions/").content.decode()


def test_the_launch_form_queues_a_run_and_shows_field_errors(client, personas, dataset):
    client.force_login(personas["ml_engineer"])
    assert client.get("/training/runs/new/").status_code == 200
    form = {
        "dataset_version": dataset.pk,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": "q_proj,v_proj",
        "learning_rate": 0.001,
        "num_epochs": 1,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_length": 128,
        "seed": 1,
    }
    bad = client.post("/training/runs/new/", {**form, "lora_r": 0})
    assert bad.status_code == 400 and b"lora_r" in bad.content
    good = client.post("/training/runs/new/", form)
    run = TrainingRun.objects.get()
    assert good.status_code == 302 and str(run.pk) in good["Location"]
    assert run.hyperparameters["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.APPROVER])
def test_the_launch_page_is_for_launchers_only(client, personas, role):
    client.force_login(personas[role])
    assert client.get("/training/runs/new/").status_code == 403


def test_the_loss_chart_labels_tell_a_flat_curve_apart():
    from training_app.charts import line_chart

    svg = line_chart({"train loss": [(1, 10.81), (2, 10.83)]})
    assert ">10.8300<" in svg and ">10.8200<" in svg and ">10.8100<" in svg
