"""Issue 18, item 5: every main page fits a phone. At 390 px wide nothing scrolls sideways:
tables scroll inside their own box, long hashes and ids wrap, the nav wraps."""

# The fixtures imported below are then named as test arguments, which ruff takes for
# redefinitions.
# ruff: noqa: F811

import pytest
from django.contrib.auth.models import Group

from governance.services import channel_deploy
from reviews.services import queue_claim_next, review_submit

from ..reliability.conftest import training_folders, world  # noqa: F401  (fixtures)
from ..training_app.governance_helpers import finish_evaluations
from ..ui.conftest import signed_off
from ..waiting import BROWSER_ACTION_SECONDS
from .test_workbench_browser import session_cookie_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}

# What sticks out past the viewport and is not scrolled inside a box of its own (an absolutely
# positioned element escapes such a box unless it is positioned, so it counts).
CULPRITS = """(inner) => {
  const boxed = (e) => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== 'visible') return true;
    }
    return false;
  };
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > inner + 1)
    .filter(e => ['absolute', 'fixed'].includes(getComputedStyle(e).position) || !boxed(e))
    .slice(0, 4)
    .map(e => [e.tagName.toLowerCase(), e.getAttribute('class') || '',
               Math.round(e.getBoundingClientRect().right) + 'px'].join(' '));
}"""


@pytest.fixture
def everyone(world, make_user):
    """One person holding every role, so every page and every control is on show."""
    user = make_user(None, username="everyone")
    user.groups.set(Group.objects.all())
    # Something in "My reviews", a live version to monitor and a channel history with rows.
    lease = queue_claim_next(queue=world.queue, user=user)
    review_submit(lease_id=lease.pk, user=user, decision="approve")
    finish_evaluations(world.signoff)
    signed_off(world.approved, world.channel, world.people["ml_engineer"])
    channel_deploy(user=world.people["deployer"], channel=world.channel, version=world.approved)
    return user


def main_pages(world) -> dict[str, str]:
    version, approved = world.version, world.approved
    return {
        "queues (home)": "/",
        "workbench": f"/queues/{world.queue.pk}/work/",
        "my reviews": "/reviews/mine/",
        "datasets": "/datasets/",
        "dataset version": f"/datasets/{world.dataset.pk}/",
        "training runs": "/training/",
        "training run": f"/training/runs/{version.run_id}/",
        "versions": "/training/versions/",
        "version": f"/training/versions/{version.pk}/",
        "governance": f"/training/versions/{approved.pk}/governance/",
        "channels": "/training/channels/",
        "channel": f"/training/channels/{world.channel.name}/",
        "sign-off request": f"/training/signoff/{world.signoff.pk}/",
        "audit log": "/training/audit/",
        "compliance report": f"/training/versions/{approved.pk}/compliance/",
        "monitoring": "/training/monitoring/",
    }


def test_every_main_page_fits_a_phone(live_server, chromium_browser, world, everyone):
    context = chromium_browser.new_context(viewport=PHONE, device_scale_factor=1)
    context.add_cookies(session_cookie_for(everyone, live_server.url))
    page = context.new_page()
    page.set_default_timeout(BROWSER_ACTION_SECONDS * 1000)
    wide = {}
    try:
        for name, path in main_pages(world).items():
            answer = page.goto(f"{live_server.url}{path}")
            assert answer.status == 200, f"{name} ({path}) answered {answer.status}"
            width = page.evaluate("document.documentElement.scrollWidth")
            inner = page.evaluate("window.innerWidth")
            if width > inner:
                culprits = page.evaluate(CULPRITS, inner)
                wide[name] = f"{path}: {width} px wide ({', '.join(culprits)})"
    finally:
        context.close()
    assert not wide, f"{len(wide)} pages scroll sideways at 390 px:\n" + "\n".join(
        f"  {name}: {why}" for name, why in wide.items()
    )
