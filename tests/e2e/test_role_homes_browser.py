"""Every role knows where it stands (issue 18): in a real browser, the approver, the deployer,
the auditor and the ML engineer each land on "/" and see their own section and not the
others'; the approver follows the inbox to a sign-off page whose decision panel comes before
the long evaluation report. Saves docs/screenshots/home-approver.png and home-deployer.png
(1280 by 800) for the README, rewritten on each run."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from governance.services import signoff_decide, signoff_request_create

from ..training_app import conftest as training_fixtures
from ..training_app.governance_helpers import finish_evaluations, make_channel, make_version
from ..training_app.live_helpers import register_fake_base_model
from .test_workbench_browser import session_cookie_for

training_dirs = training_fixtures.training_dirs
make_dataset_version = training_fixtures.make_dataset_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SECTIONS = {
    "approver": "Awaiting your sign-off",
    "deployer": "Approved, ready to deploy",
    "auditor": "Audit chain and versions",
    "ml_engineer": "Training runs and datasets",
}


@pytest.fixture
def world(personas, make_dataset_version, training_dirs, tmp_path):
    """One version approved for production (the deployer's), one awaiting sign-off for
    staging (the approver's); no torch: the versions and evaluations are fabricated."""
    register_fake_base_model(tmp_path / "base")
    dataset = make_dataset_version(2, 1)
    engineer = personas["ml_engineer"]
    approved = make_version(launcher=engineer, dataset=dataset, tmp_path=tmp_path, name="harbor-v2")
    done = signoff_request_create(
        user=engineer, version=approved, channel=make_channel("production"), enqueue=False
    )
    finish_evaluations(done)
    signoff_decide(user=personas["approver"], request=done, decision="approve", comment="Fine.")
    waiting = make_version(
        launcher=engineer, dataset=dataset, tmp_path=tmp_path, name="harbor-v3", seed=1
    )
    open_request = signoff_request_create(
        user=engineer, version=waiting, channel=make_channel("staging"), enqueue=False
    )
    finish_evaluations(open_request)
    return {"dataset": dataset, "approved": approved, "open": open_request}


def open_home(page, user, url):
    page.context.clear_cookies()
    page.context.add_cookies(session_cookie_for(user, url))
    page.goto(f"{url}/")


def heading(page, role):
    return page.get_by_role("heading", name=SECTIONS[role], level=2)


def test_each_role_lands_on_its_own_section_and_the_approver_decides_above_the_report(
    live_server, page, personas, world
):
    url = live_server.url
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for role in SECTIONS:
        open_home(page, personas[role], url)
        expect(heading(page, role)).to_be_visible()
        for other in SECTIONS.keys() - {role}:
            expect(heading(page, other)).to_have_count(0)
        section = page.locator("section.home-section", has=heading(page, role))
        if role == "approver":
            link = section.get_by_role("link", name=f"Sign-off #{world['open'].pk}")
            expect(link).to_contain_text("harbor-v3 for staging")
            expect(link).to_have_attribute("href", f"/training/signoff/{world['open'].pk}/")
        elif role == "deployer":
            expect(section).to_contain_text("harbor-v2")
            expect(section.get_by_role("link", name="Deploy on production")).to_be_visible()
        elif role == "auditor":
            expect(section).to_contain_text("published head is #")
            expect(section.get_by_role("link", name="Verify the chain")).to_be_visible()
        else:
            run = world["approved"].run_id
            expect(section.locator(f'a[href="/training/runs/{run}/"]')).to_have_count(1)
            dataset = world["dataset"].pk
            expect(section.locator(f'a[href="/datasets/{dataset}/"]')).to_have_count(1)
        if role in ("approver", "deployer"):
            page.screenshot(path=str(SCREENSHOTS / f"home-{role}.png"))

    open_home(page, personas["approver"], url)
    page.get_by_role("link", name=f"Sign-off #{world['open'].pk}").click()
    panel = page.locator("#decision-panel")
    report = page.get_by_role("heading", name="Evaluation report")
    expect(panel).to_be_visible()
    expect(report).to_be_visible()
    assert panel.bounding_box()["y"] < report.bounding_box()["y"]
