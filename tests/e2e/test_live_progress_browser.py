"""A job that finishes while its page is open: the version page shows the evaluation's result
and the next step by itself, without anyone reloading it (issue 18)."""

import pytest
from playwright.sync_api import expect

from ..training_app import conftest as training_fixtures
from ..training_app.governance_helpers import make_version
from ..training_app.live_helpers import (
    finish_evaluation,
    register_fake_base_model,
    start_evaluation,
)
from ..waiting import REQUEST_SECONDS
from .test_workbench_browser import session_cookie_for

training_dirs = training_fixtures.training_dirs
make_dataset_version = training_fixtures.make_dataset_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_version_page_shows_a_finished_evaluation_without_a_reload(
    live_server, page, personas, make_dataset_version, training_dirs, tmp_path
):
    register_fake_base_model(tmp_path / "base")
    version = make_version(
        launcher=personas["ml_engineer"],
        dataset=make_dataset_version(2, 1),
        tmp_path=tmp_path,
        status="trained",
    )
    evaluation = start_evaluation(version)
    page.context.add_cookies(session_cookie_for(personas["ml_engineer"], live_server.url))
    page.goto(f"{live_server.url}/training/versions/{version.pk}/")
    expect(page.locator(".job-progress")).to_contain_text("Evaluating: 0/1 done · 1 running")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    finish_evaluation(evaluation)

    # The poll picks it up; generous, since the machine may be loaded.
    next_step = page.get_by_role("link", name="Request sign-off")
    expect(next_step).to_be_visible(timeout=REQUEST_SECONDS * 1000)
    expect(next_step).to_have_attribute("href", f"/training/versions/{version.pk}/governance/")
    expect(page.locator("#version-evaluation table")).to_contain_text("rouge_l")
    expect(page.locator(".job-progress")).to_have_count(0)
    assert navigations == [], "the page was reloaded"
    # Done: it stops asking.
    expect(page.locator("#version-evaluation[hx-trigger]")).to_have_count(0)
