"""confirm.js in a real browser: declining the question sends nothing; agreeing deploys."""

# The fixtures imported below are then named as test arguments, which ruff takes for
# redefinitions.
# ruff: noqa: F811

import pytest
from playwright.sync_api import expect

from governance.models import Channel, Deployment

from ..reliability.conftest import training_folders, world  # noqa: F401  (fixtures)
from ..ui.conftest import releases  # noqa: F401  (fixture)
from .test_workbench_browser import session_cookie_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_deploy_is_sent_only_once_the_consequence_is_accepted(
    live_server,
    page,
    world,
    releases,
):
    first, _second = releases
    page.context.add_cookies(session_cookie_for(world.people["deployer"], live_server.url))
    page.goto(f"{live_server.url}/training/channels/{world.channel.name}/")
    page.locator("select[name=version]").select_option(str(first.pk))
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_timeout(500)
    assert asked == [f"Deploy {first.name} to world? Users get {first.name}'s answers from now on."]
    assert not Deployment.objects.exists()

    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Deploy").click()
    expect(page.locator("dl.facts dd").first).to_have_text(first.name)
    assert Channel.objects.get(pk=world.channel.pk).live_version_id == first.pk
    assert len(asked) == 2
