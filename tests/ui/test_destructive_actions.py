"""Issue 18, item 4: cancelling a run, deploying, rolling back and retiring ask first, naming
the consequence (the form's `data-confirm`, asked by static/signoff/confirm.js), look
dangerous (`button.danger`), and the page shows their effect at once."""

import html
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from training_app.models import TrainingRun
from training_app.services import training_run_create

from .conftest import deploy

# Pages: their database reads are covered on PostgreSQL by the service and API tests.
pytestmark = [pytest.mark.django_db, pytest.mark.once]


def queued_run(world) -> TrainingRun:
    return training_run_create(
        user=world.people["ml_engineer"],
        dataset_version=world.dataset,
        enqueue=False,
        hyperparameters={"num_epochs": 1},
    )


def forms(page: str) -> list[str]:
    return re.findall(r"<form\b.*?</form>", page, flags=re.S)


def form_posting_to(page: str, action: str) -> str:
    [form] = [f for f in forms(page) if f'action="{action}"' in f]
    return form


def confirm_text(form: str) -> str:
    match = re.search(r'<form\b[^>]*\bdata-confirm="([^"]*)"', form, flags=re.S)
    assert match, f"no data-confirm on {form[:200]}"
    return html.unescape(match.group(1))


def test_the_confirm_script_is_served_on_every_page_and_the_danger_style_exists(client, world):
    client.force_login(world.people["ml_engineer"])
    page = client.get("/").content.decode()
    assert "signoff/confirm.js" in page
    script = Path(finders.find("signoff/confirm.js")).read_text()
    assert "data-confirm" in script and "window.confirm" in script
    css = Path(finders.find("signoff/signoff.css")).read_text()
    assert re.search(r"button\.danger[^{]*\{[^}]*background:\s*var\(--bad\)", css)


def test_cancel_run_asks_first_and_disappears_once_cancelled(client, world):
    client.force_login(world.people["ml_engineer"])
    run = queued_run(world)
    assert run.status == "queued"
    url = f"/training/runs/{run.pk}/"
    page = client.get(url).content.decode()
    form = form_posting_to(page, f"{url}cancel/")
    assert 'class="danger"' in form
    assert confirm_text(form) == (
        f"Cancel training run {str(run.pk)[:8]}? It never starts and cannot be resumed: "
        f"version {run.model_version.name} is cancelled with it."
    )
    answer = client.post(f"{url}cancel/", follow=True)
    page = answer.content.decode()
    assert answer.status_code == 200
    main = page[page.index("<main") :]
    assert "Cancelled" in main and "Cancel run" not in main, main
    assert f"{url}cancel/" not in page


def test_a_running_run_shows_cancelling_without_the_button(client, world):
    client.force_login(world.people["ml_engineer"])
    run = queued_run(world)
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    url = f"/training/runs/{run.pk}/"
    form = form_posting_to(client.get(url).content.decode(), f"{url}cancel/")
    assert "It stops at its next step" in confirm_text(form)
    page = client.post(f"{url}cancel/", follow=True).content.decode()
    assert "Cancelling" in page and "Cancel run" not in page
    # The polled fragment says the same, so the page does not bring the button back.
    fragment = client.get(f"{url}progress/").content.decode()
    assert "Cancelling" in fragment and "Cancel run" not in fragment


def test_deploy_asks_naming_the_version_and_what_users_get(client, world, releases):
    first, second = releases
    client.force_login(world.people["deployer"])
    channel_url = f"/training/channels/{world.channel.name}/"
    page = client.get(channel_url).content.decode()
    form = form_posting_to(page, f"{channel_url}deploy/")
    assert 'class="danger"' in form and confirm_text(form)
    option = re.search(rf'<option value="{second.pk}"[^>]*data-confirm="([^"]*)"', form)
    assert html.unescape(option.group(1)) == (
        f"Deploy {second.name} to world? Users get {second.name}'s answers from now on."
    )
    deploy(world, first)
    form = form_posting_to(client.get(channel_url).content.decode(), f"{channel_url}deploy/")
    option = re.search(rf'<option value="{second.pk}"[^>]*data-confirm="([^"]*)"', form)
    assert html.unescape(option.group(1)) == (
        f"Deploy {second.name} to world? Users get {second.name}'s answers from now on, "
        f"instead of {first.name}'s."
    )


def test_rollback_names_what_comes_back_or_that_the_channel_goes_offline(client, world, releases):
    first, second = releases
    client.force_login(world.people["deployer"])
    channel_url = f"/training/channels/{world.channel.name}/"
    deploy(world, first)
    form = form_posting_to(client.get(channel_url).content.decode(), f"{channel_url}rollback/")
    assert 'class="danger"' in form
    assert confirm_text(form) == (
        "Roll back world? Nothing else was live before: world goes offline."
    )
    deploy(world, second)
    form = form_posting_to(client.get(channel_url).content.decode(), f"{channel_url}rollback/")
    assert 'class="danger"' in form
    assert confirm_text(form) == (
        f"Roll back world to {first.name}? Users get {first.name}'s answers from now on."
    )


def test_retire_asks_first_and_looks_dangerous(client, world):
    client.force_login(world.people["deployer"])
    page = client.get(f"/training/versions/{world.approved.pk}/governance/").content.decode()
    form = form_posting_to(page, f"/training/versions/{world.approved.pk}/retire/")
    assert 'class="danger"' in form
    assert confirm_text(form) == (
        f"Retire {world.approved.name}? It can never be deployed again, on any channel, and "
        "this cannot be undone."
    )
