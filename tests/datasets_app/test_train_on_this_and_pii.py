"""The dataset version page: "Train on this" for those who may launch training, and one
figure for the PII found, in the pipeline table and the PII table alike."""

import re

import pytest
from django.test import Client

from datasets_app import selectors, services

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]


@pytest.fixture
def version(resolved, personas):
    resolved("Hi, I'm ann@example.com, cc bob@example.com: is hail covered?", "Yes.")
    resolved("Write to me at carl@example.org about the burst pipe.", "We will.")
    resolved("Is glass covered?", "No.")
    return services.dataset_version_build(user=personas["admin"], name="support", seed=1)


def page(user, version) -> str:
    client = Client()
    client.force_login(user)
    answer = client.get(f"/datasets/{version.pk}/")
    assert answer.status_code == 200
    return answer.content.decode()


@pytest.mark.parametrize("role", ["ml_engineer", "admin"])
def test_train_on_this_links_to_the_run_form_with_the_dataset_chosen(personas, version, role):
    html = page(personas[role], version)
    assert f'href="/training/runs/new/?dataset_version={version.pk}"' in html
    assert "Train on this" in html


@pytest.mark.parametrize("role", ["auditor", "approver"])
def test_train_on_this_is_hidden_from_those_who_cannot_launch(personas, version, role):
    assert "Train on this" not in page(personas[role], version)


def test_a_reviewer_gets_neither_the_page_nor_the_run_form(personas, version):
    client = Client()
    client.force_login(personas["reviewer"])
    assert client.get(f"/datasets/{version.pk}/").status_code == 403
    assert client.get(f"/training/runs/new/?dataset_version={version.pk}").status_code == 403


def test_the_pii_figures_agree_between_the_pipeline_and_the_pii_table(personas, version):
    # Three e-mail addresses in two examples: three were replaced.
    assert version.counts["pii"] == {"EMAIL": 3}
    pii_step = next(step for step in version.counts["steps"] if step["name"] == "pii")
    assert pii_step["reasons"] == {"masked EMAIL": 3}
    assert pii_step["changed"] == 2  # examples
    html = page(personas["ml_engineer"], version)
    assert "<div>masked EMAIL: 3</div>" in html
    assert re.search(r"&lt;EMAIL&gt;</th><td>3</td>", html)
    card = selectors.dataset_version_card(version=version)
    assert "| EMAIL | 3 |" in card and "masked EMAIL: 3" in card
