"""Pages that wait on a long job update themselves while it runs, say how far it is in units a
person reads, stop polling when it is over, and then link to the next step (issue 18)."""

import pytest
from django.utils import timezone

from governance.services import signoff_decide, signoff_request_create
from training_app.models import Evaluation, ModelVersion, TrainingRun
from training_app.services import training_run_create
from training_app.templatetags.human_time import duration

from .governance_helpers import finish_evaluations, make_channel, make_version
from .live_helpers import finish_evaluation, register_fake_base_model, start_evaluation

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = pytest.mark.once

POLLING = 'hx-trigger="every'


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, ""),
        (0, "less than a minute"),
        (44, "less than a minute"),
        (240, "about 4 min"),
        (3540, "about 59 min"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (14625, "4 h 4 min"),
        (90000, "1 d 1 h"),
        ("not a number", ""),
    ],
)
def test_the_duration_filter_speaks_in_human_units(seconds, words):
    assert duration(seconds) == words


@pytest.fixture
def dataset(make_dataset_version, training_dirs, tmp_path):
    register_fake_base_model(tmp_path / "base")
    return make_dataset_version(2, 1)


@pytest.fixture
def run(personas, dataset):
    return training_run_create(
        user=personas["ml_engineer"], dataset_version=dataset, enqueue=False, name="harbor-live"
    )


def test_the_run_page_polls_says_queued_from_state_and_shows_the_eta_in_minutes(
    client, personas, run
):
    client.force_login(personas["ml_engineer"])
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert POLLING in page and "Training run queued" in page
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running",
        started_at=timezone.now(),
        progress={"step": 3, "total_steps": 10, "eta_s": 14625},
    )
    fragment = client.get(f"/training/runs/{run.pk}/progress/").content.decode()
    assert POLLING in fragment
    assert "4 h 4 min left" in fragment and "14625" not in fragment
    assert "Training run queued" not in fragment


def test_the_run_fragment_stops_polling_and_links_to_the_version_when_it_succeeded(
    client, personas, run
):
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", finished_at=timezone.now())
    client.force_login(personas["ml_engineer"])
    fragment = client.get(f"/training/runs/{run.pk}/progress/").content.decode()
    assert "hx-trigger" not in fragment and "every" not in fragment
    version = ModelVersion.objects.get(run=run)
    assert f'href="/training/versions/{version.pk}/"' in fragment and "Next step" in fragment
    assert "queued" not in fragment.lower()


def test_the_queued_banner_does_not_outlive_the_queued_run(client, personas, dataset):
    client.force_login(personas["ml_engineer"])
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
    launched = client.post("/training/runs/new/", form, follow=True)
    assert b"Training run queued" in launched.content  # said while it is queued
    run = TrainingRun.objects.get()
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", finished_at=timezone.now())
    for url in (f"/training/runs/{run.pk}/progress/", f"/training/runs/{run.pk}/"):
        assert b"queued" not in client.get(url).content.lower()


@pytest.fixture
def version(personas, dataset, tmp_path):
    return make_version(
        launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path, status="trained"
    )


def test_the_version_page_polls_a_running_evaluation_then_shows_it_and_the_next_step(
    client, personas, version
):
    evaluation = start_evaluation(version)
    client.force_login(personas["ml_engineer"])
    page = client.get(f"/training/versions/{version.pk}/").content.decode()
    assert POLLING in page and f"/training/versions/{version.pk}/evaluation/" in page
    assert "Evaluating: 0/1 done · 1 running" in page and "requested less than a minute ago" in page
    finish_evaluation(evaluation)
    fragment = client.get(f"/training/versions/{version.pk}/evaluation/").content.decode()
    assert "hx-trigger" not in fragment and "every" not in fragment
    assert "Candidate vs reference" in fragment or "<svg" in fragment
    assert f'href="/training/versions/{version.pk}/governance/"' in fragment
    assert "Request sign-off" in fragment


def test_the_version_page_says_how_long_an_evaluation_has_waited(client, personas, version):
    evaluation = start_evaluation(version)
    Evaluation.objects.filter(pk=evaluation.pk).update(
        created_at=timezone.now() - timezone.timedelta(minutes=3, seconds=10)
    )
    client.force_login(personas["approver"])
    fragment = client.get(f"/training/versions/{version.pk}/evaluation/").content.decode()
    assert "requested about 3 min ago" in fragment
    finish_evaluation(evaluation)
    fragment = client.get(f"/training/versions/{version.pk}/evaluation/").content.decode()
    # Not theirs to request: they are told who does it, still with the way there.
    assert "an ML engineer" in fragment and "/governance/" in fragment


def test_the_signoff_page_polls_its_comparisons_then_shows_the_report(
    client, personas, dataset, tmp_path
):
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    signoff = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=make_channel(), enqueue=False
    )
    client.force_login(personas["approver"])
    page = client.get(f"/training/signoff/{signoff.pk}/").content.decode()
    assert POLLING in page and f"/training/signoff/{signoff.pk}/comparisons/" in page
    assert "Comparing: 0/" in page
    finish_evaluations(signoff)
    fragment = client.get(f"/training/signoff/{signoff.pk}/comparisons/").content.decode()
    assert "hx-trigger" not in fragment and "every" not in fragment
    assert "Evaluation report" in fragment and "Regression gate" in fragment
    assert "Passed." in fragment


def test_an_approved_signoff_links_to_deploying_on_its_channel(client, personas, dataset, tmp_path):
    version = make_version(launcher=personas["ml_engineer"], dataset=dataset, tmp_path=tmp_path)
    signoff = signoff_request_create(
        user=personas["ml_engineer"], version=version, channel=make_channel(), enqueue=False
    )
    finish_evaluations(signoff)
    signoff_decide(user=personas["approver"], request=signoff, decision="approve", comment="Ok.")
    client.force_login(personas["deployer"])
    page = client.get(f"/training/signoff/{signoff.pk}/").content.decode()
    assert 'href="/training/channels/production/"' in page
    assert f"Deploy {version.name} on production" in page
