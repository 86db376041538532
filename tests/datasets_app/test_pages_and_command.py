"""Pages (list with SVG plots, version page with samples, build form) and the CLI."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from datasets_app import services
from datasets_app.models import DatasetVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(resolved):
    topics = ["hail on the roof", "a burst pipe", "a stolen bicycle", "a cracked windscreen",
              "flooded basement", "lost luggage abroad"]  # fmt: skip
    for n, topic in enumerate(topics):
        resolved(f"Where do I send the form for claim {n}? It is about {topic}.", f"To us, {n}.")
    resolved("Is glass covered?", "No.", resolution="corrected", correction="Yes.", by="lead")


def browser(user=None):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_list_page_shows_versions_with_svg_plots(data, personas):
    version = services.dataset_version_build(user=personas["admin"], name="support", seed=1)
    page = browser(personas["auditor"]).get("/datasets/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f"support #{version.pk}" in html
    assert html.count('<svg class="plot funnel"') == 2  # latest (large) + the row (compact)
    assert '<svg class="plot balance"' in html
    assert "Pipeline funnel: candidates 7" in html
    assert '<script src="http' not in html  # nothing from a CDN
    assert "Build a version" not in html  # auditors read only


def test_version_page_shows_samples_per_split_and_marks(data, personas):
    version = services.dataset_version_build(
        user=personas["ml_engineer"], name="support", seed=1, eval_fraction=0.3
    )
    html = browser(personas["approver"]).get(f"/datasets/{version.pk}/").content.decode()
    assert "Sample from train" in html and "Sample from eval" in html
    assert version.manifest_hash in html
    assert "decided by a lead after disagreement" in html
    assert "?format=dpo" in html


@pytest.mark.parametrize("role", ["reviewer", "lead", "deployer", "outsider"])
def test_pages_refuse_other_roles(data, personas, role):
    version = services.dataset_version_build(user=personas["admin"], name="support")
    client = browser(personas[role])
    assert client.get("/datasets/").status_code == 403
    assert client.get(f"/datasets/{version.pk}/").status_code == 403
    assert client.get("/datasets/new/").status_code == 403


@pytest.mark.parametrize("role", ["auditor", "approver", "reviewer"])
def test_build_form_is_for_builders_only(data, personas, role):
    response = browser(personas[role]).post("/datasets/new/", {"name": "x"})
    assert response.status_code == 403
    assert not DatasetVersion.objects.exists()


def test_anonymous_users_are_sent_to_log_in(data):
    response = browser().get("/datasets/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def form(**overrides):
    data = {
        "name": "from-form",
        "labels": ["approved", "corrected"],
        "pii": "mask",
        "near_dup_threshold": "0.8",
        "leakage_threshold": "0.8",
        "seed": "3",
        "eval_fraction": "0.2",
        "stratify": "",
        "run": "inline",
        "caps": "label:approved=4",
        "pii_patterns": "CLAIM=claim \\d+",
    }
    data.update(overrides)
    return data


def test_build_form_builds_and_redirects(data, personas):
    client = browser(personas["ml_engineer"])
    assert client.get("/datasets/new/").status_code == 200
    response = client.post("/datasets/new/", form())
    version = DatasetVersion.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/datasets/{version.pk}/"
    assert version.status == "ready"
    assert version.settings["caps"] == {"label": {"approved": 4}}
    assert version.counts["balance"]["after"]["label"]["approved"] == 4
    assert version.counts["pii"] == {"CLAIM": 6}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"caps": "label approved 4"}, "is not dimension:value=max"),
        ({"pii_patterns": "CLAIM=("}, "not a valid regular expression"),
        ({"tokenizer_path": "/tmp/nope.json"}, "tokenizer_path must name"),
    ],
)
def test_build_form_shows_errors(data, personas, overrides, message):
    response = browser(personas["admin"]).post("/datasets/new/", form(**overrides))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not DatasetVersion.objects.filter(status="ready").exists()


def test_command_builds_with_progress(data, personas):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "build_dataset",
        "--name=cli",
        "--user=ml_engineer",
        "--seed=4",
        "--cap=tag:*=100",
        "--pii-pattern=CLAIM=claim \\d+",
        stdout=out,
        stderr=err,
    )
    version = DatasetVersion.objects.get(name="cli")
    assert f"dataset version {version.pk} 'cli'" in out.getvalue()
    assert version.manifest_hash in out.getvalue()
    progress = err.getvalue()
    for step in ("sync examples", "near dedup", "write", "done"):
        assert step in progress
    assert "[##############################]" in progress


def test_command_refuses_non_builders_and_bad_settings(data, personas):
    with pytest.raises(CommandError, match="may not build"):
        call_command("build_dataset", "--name=x", "--user=auditor")
    with pytest.raises(CommandError, match="eval_fraction"):
        call_command("build_dataset", "--name=x", "--user=admin", "--eval-fraction=3")
    assert not DatasetVersion.objects.exists()
