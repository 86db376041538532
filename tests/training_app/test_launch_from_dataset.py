"""From a dataset version to a run: "Train on this", the run form preselected and labelled,
the schedule fitted to the dataset and why, and the number of optimizer steps and the time
they take, estimated before launch."""

import re

import pytest
from django.utils import timezone
from django.utils.html import escape

from training_app.estimate_selectors import run_recipe
from training_app.forms import LaunchForm
from training_app.models import TrainingRun
from training_app.training.hyperparameters import validate

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def datasets(make_dataset_version, tiny_base_model, training_dirs):
    older = make_dataset_version(4, 1, name="older")
    newer = make_dataset_version(10, 2, name="newer")
    return older, newer


def selected_dataset(html: str) -> str | None:
    select = re.search(r'<select name="dataset_version".*?</select>', html, re.S).group(0)
    chosen = re.search(r'<option value="(\d+)" selected>', select)
    return chosen.group(1) if chosen else None


def finished_run(
    dataset, launcher, base_model, *, steps: int, elapsed: float, batch_size: int = 2
) -> TrainingRun:
    return TrainingRun.objects.create(
        dataset_version=dataset,
        base_model=base_model,
        created_by=launcher,
        hyperparameters={"batch_size": batch_size, "gradient_accumulation_steps": 1},
        status=TrainingRun.Status.SUCCEEDED,
        finished_at=timezone.now(),
        progress={"step": steps, "total_steps": steps, "elapsed_s": elapsed},
    )


def test_a_reviewer_is_refused_both_the_dataset_and_the_run_form(client, personas, datasets):
    client.force_login(personas["reviewer"])
    assert client.get(f"/datasets/{datasets[1].pk}/").status_code == 403
    assert client.get(f"/training/runs/new/?dataset_version={datasets[1].pk}").status_code == 403


def test_the_run_form_preselects_the_dataset_from_the_link(client, personas, datasets):
    older, _ = datasets
    client.force_login(personas["ml_engineer"])
    html = client.get(f"/training/runs/new/?dataset_version={older.pk}").content.decode()
    assert selected_dataset(html) == str(older.pk)


def test_the_run_form_defaults_to_the_newest_ready_dataset(client, personas, datasets):
    client.force_login(personas["ml_engineer"])
    html = client.get("/training/runs/new/").content.decode()
    assert selected_dataset(html) == str(datasets[1].pk)
    html = client.get("/training/runs/new/?dataset_version=999999").content.decode()
    assert selected_dataset(html) == str(datasets[1].pk)


def test_every_launch_form_field_has_a_human_label_and_help():
    for name, field in LaunchForm().fields.items():
        assert field.label is not None, f"{name}: no label of its own"  # else "Lora r"
        assert field.help_text, name
    assert LaunchForm().fields["lora_r"].label == "LoRA rank (r)"


def test_every_dataset_build_form_field_has_a_human_label():
    from datasets_app.forms import DatasetBuildForm

    for name, field in DatasetBuildForm().fields.items():
        assert field.label is not None, f"{name}: no label of its own"  # else "Pii"
    assert DatasetBuildForm().fields["pii"].label == "Personal data (PII)"


def test_the_estimate_says_no_measurement_yet_without_finished_runs(client, personas, datasets):
    _, newer = datasets
    client.force_login(personas["ml_engineer"])
    html = client.get(f"/training/runs/new/?dataset_version={newer.pk}").content.decode()
    # 10 training examples, batch 2 (fitted: a few examples), 5 steps an epoch; 144 updates
    # would take 29 epochs, so 16 (the most), 80 steps.
    assert 'id="run-estimate"' in html
    assert "<strong>80</strong> optimizer steps: 16 epochs of 5 (" in html
    assert "no measurement yet" in html


def test_the_estimate_uses_the_measured_seconds_per_example_on_the_same_base_model(
    client, personas, datasets, tiny_base_model
):
    older, newer = datasets
    # 20 examples in 30 s, then 120 examples (batch 4) in 180 s: 1.5 s per example.
    finished_run(older, personas["ml_engineer"], tiny_base_model, steps=10, elapsed=30.0)
    finished_run(
        older, personas["ml_engineer"], tiny_base_model, steps=30, elapsed=180.0, batch_size=4
    )
    client.force_login(personas["ml_engineer"])
    url = (
        f"/training/runs/new/estimate/?dataset_version={newer.pk}"
        "&batch_size=2&gradient_accumulation_steps=1&num_epochs=3"
    )
    answer = client.get(url, **HTMX)
    html = answer.content.decode()
    assert answer.status_code == 200
    # 10 examples / batch 2 = 5 steps an epoch, 3 epochs = 15 steps = 30 examples trained on,
    # at 1.5 s each = 45 s.
    assert "<strong>15</strong> optimizer steps" in html
    assert "1.50 s per example trained on (30 in all)" in html and "about 45 seconds" in html
    assert "2 finished runs" in html and tiny_base_model.name in html
    assert "no measurement yet" not in html


def test_the_estimate_fragment_is_for_launchers_only(client, personas, datasets):
    client.force_login(personas["reviewer"])
    url = f"/training/runs/new/estimate/?dataset_version={datasets[1].pk}"
    assert client.get(url, **HTMX).status_code == 403


def test_the_launch_page_shows_the_fitted_schedule_and_why(
    client, personas, make_dataset_version, tiny_base_model, training_dirs
):
    dataset = make_dataset_version(40, 2, name="forty")
    client.force_login(personas["ml_engineer"])
    html = client.get(f"/training/runs/new/?dataset_version={dataset.pk}").content.decode()
    recipe = run_recipe(dataset_version=dataset, hyperparameters=validate({}), explicit=())
    # 40 examples: batch 2, 20 steps an epoch, 144 updates at least: 8 epochs, stopping at 144.
    assert recipe.total_steps == 144
    assert (
        "<strong>144</strong> optimizer steps: 8 epochs of 20, the last stopping at step 144"
        in (html)
    )
    assert "batch 2: 40 examples (&lt; 128) learn more from twice the updates of batch 4" in html
    assert "learning rate 0.002 (not 0.001)" in html
    for reason in recipe.reasons:
        assert escape(reason) in html
    assert "7 warm-up steps" in html and "at each epoch end" in html
    # The schedule fields start blank: left so, they are fitted, not sent as defaults.
    for name in ("num_epochs", "batch_size", "learning_rate"):
        form = re.search(rf'<input type="number" name="{name}"[^>]*>', html).group(0)
        assert "value=" not in form and 'placeholder="fitted to the data"' in form


def test_what_the_launcher_sets_is_kept_and_the_estimate_counts_what_the_run_gets(
    client, personas, datasets
):
    _, newer = datasets  # 10 training examples
    client.force_login(personas["ml_engineer"])
    fields = f"dataset_version={newer.pk}&num_epochs=2&batch_size=&gradient_accumulation_steps=1"
    fragment = client.get(f"/training/runs/new/estimate/?{fields}", **HTMX).content.decode()
    # Every field as the page sends it: those at their default and the blank batch size are
    # not "set", so only num_epochs is kept as given.
    form = {
        name: "" if field.initial is None else field.initial
        for name, field in LaunchForm().fields.items()
    }
    form.update(dataset_version=newer.pk, num_epochs=2, batch_size="", base_model="", name="")
    form.update(parent_version="")
    answer = client.post("/training/runs/new/", form)
    assert answer.status_code == 302, answer.content.decode()
    run = TrainingRun.objects.get()
    recipe = run.model_version.config["recipe"]
    assert recipe["explicit"] == ["num_epochs"]
    assert run.hyperparameters["num_epochs"] == 2  # the recipe alone would give 16
    assert run.hyperparameters["batch_size"] == recipe["fitted"]["batch_size"] == 2
    assert recipe["total_steps"] == 10  # 2 epochs of 5
    assert "<strong>10</strong> optimizer steps: 2 epochs of 5 (" in fragment
    assert "As you set: num_epochs." in fragment
    run_page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "10 optimizer steps over 10 training examples, fitted to the data" in run_page
    assert all(escape(reason) in run_page for reason in recipe["reasons"])
    assert "As set at launch: num_epochs." in run_page


def test_the_estimate_names_a_bad_value_instead_of_counting(client, personas, datasets):
    client.force_login(personas["ml_engineer"])
    url = f"/training/runs/new/estimate/?dataset_version={datasets[1].pk}&batch_size=0"
    html = client.get(url, **HTMX).content.decode()
    assert "No estimate: batch_size: must be between 1 and 512" in html
    assert "optimizer steps" not in html
