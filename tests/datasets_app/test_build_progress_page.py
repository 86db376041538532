"""The dataset version page waits on its build like the other pages that wait on a job: a
fragment that polls while the build runs, says what it is doing and how far it is in words a
person reads, stops polling when the build is over and then links to the next step (issue 18)."""

import pytest
from django.test import Client

from datasets_app import services
from datasets_app.models import DatasetVersion
from datasets_app.services import leases

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]

POLLING = 'hx-trigger="every'


@pytest.fixture
def outputs(resolved):
    resolved("Is hail covered?", "Yes.")
    resolved("Is glass covered?", "No.")


def get(user, url) -> str:
    client = Client()
    client.force_login(user)
    answer = client.get(url)
    assert answer.status_code == 200
    return answer.content.decode()


def test_a_building_version_polls_a_fragment_that_says_what_the_build_is_doing(personas, outputs):
    engineer = personas["ml_engineer"]
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    page = get(engineer, f"/datasets/{version.pk}/")
    assert 'http-equiv="refresh"' not in page
    assert f'hx-get="/datasets/{version.pk}/progress/"' in page and POLLING in page
    assert "Build queued less than a minute ago: waiting for a worker" in page
    token = leases._dataset_version_claim(version.pk)
    leases._set_progress(version.pk, token, "sync examples", 120, 400)
    fragment = get(engineer, f"/datasets/{version.pk}/progress/")
    assert POLLING in fragment and fragment.lstrip().startswith("<section")
    assert "Turning reviewed outputs into examples: 120 of 400 outputs" in fragment
    assert "building for less than a minute" in fragment
    leases._set_progress(version.pk, token, "near dedup", 3, 7)
    fragment = get(engineer, f"/datasets/{version.pk}/progress/")
    assert "Cleaning the examples: step 4 of 7 (near dedup)" in fragment
    assert 'value="3" max="7"' in fragment
    assert "Train on this" not in fragment


@pytest.mark.parametrize("role", ["ml_engineer", "auditor"])
def test_a_ready_version_stops_polling_and_links_to_training_for_those_who_may(
    personas, outputs, role
):
    version = services.dataset_version_build(user=personas["admin"], name="support", seed=1)
    fragment = get(personas[role], f"/datasets/{version.pk}/progress/")
    assert POLLING not in fragment and "hx-get" not in fragment
    assert f'href="/datasets/{version.pk}/"' in fragment  # the rest of the page, now built
    train = f'href="/training/runs/new/?dataset_version={version.pk}"'
    if role == "ml_engineer":
        assert "Next step:" in fragment and train in fragment and "Train on this" in fragment
    else:
        assert train not in fragment and "Train on this" not in fragment
    page = get(personas[role], f"/datasets/{version.pk}/")
    assert POLLING not in page and (train in page) == (role == "ml_engineer")


def test_a_failed_build_stops_polling_and_says_why(personas, outputs):
    engineer = personas["ml_engineer"]
    version = services.dataset_version_create(user=engineer, name="support", seed=1)
    DatasetVersion.objects.filter(pk=version.pk).update(
        status=DatasetVersion.Status.FAILED, error="No reviewed outputs match these filters."
    )
    fragment = get(engineer, f"/datasets/{version.pk}/progress/")
    assert POLLING not in fragment and "hx-get" not in fragment
    assert "The build failed: No reviewed outputs match these filters." in fragment
    assert 'href="/datasets/new/"' in fragment and "Train on this" not in fragment


def test_the_fragment_is_refused_to_those_who_may_not_read_datasets(personas, outputs):
    version = services.dataset_version_create(user=personas["ml_engineer"], name="s", seed=1)
    client = Client()
    client.force_login(personas["reviewer"])
    assert client.get(f"/datasets/{version.pk}/progress/").status_code == 403


def test_a_poll_that_finds_the_build_ended_reloads_the_whole_page(personas, outputs):
    """The quality report, examples and exports are drawn only for a finished version: the poll
    that sees the end asks htmx to reload the page, while a poll of a running build does not."""
    engineer = personas["ml_engineer"]
    client = Client()
    client.force_login(engineer)
    building = services.dataset_version_create(user=engineer, name="support", seed=1)
    answer = client.get(f"/datasets/{building.pk}/progress/", headers={"HX-Request": "true"})
    assert answer.status_code == 200 and "HX-Refresh" not in answer.headers
    ready = services.dataset_version_build(user=engineer, name="support-2", seed=1)
    answer = client.get(f"/datasets/{ready.pk}/progress/", headers={"HX-Request": "true"})
    assert answer.status_code == 200 and answer.headers["HX-Refresh"] == "true"
