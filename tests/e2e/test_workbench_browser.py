"""The workbench in a real browser: log in, claim, approve with `a`, correct with `e` + typing
+ Ctrl+Enter, see the live diff, and find the correction stored. Saves the README's screenshots."""

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from demo.data import SYSTEM_PROMPT
from demo.management.commands.seed_demo import GUIDELINES
from reviews.models import Lease, Output, Review
from reviews.services import guidelines_publish

from ..factories import OutputFactory, QueueFactory
from ..waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"

RIGHT_ANSWER = (
    "You can file a claim in the Harbor Mutual app under Claims > New claim, or by phone 24/7. "
    "Have your policy number, photos of the damage and the other driver's details ready. "
    "Next step: open the app and start the claim; an adjuster contacts you within one business "
    "day."
)
WRONG_ANSWER = (
    "On a standard auto policy the collision deductible is $1,000 unless you chose a different "
    "amount at purchase. Your exact figure is on the declarations page."
)
CORRECTED = (
    "On a standard auto policy the collision deductible is $500 unless you chose a different "
    "amount at purchase. Your exact figure is on the declarations page. Next step: open "
    "Policy > Documents in the app to check it."
)


def session_cookie_for(user, url: str) -> list[dict]:
    """Log in without the form (the first test covers the form)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    return [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": url}]


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


@pytest.fixture
def demo_queue(personas):
    queue = QueueFactory(name="low-confidence", description="Answers the model was unsure of.")
    guidelines_publish(queue=queue, user=personas["lead"], text=GUIDELINES)
    common = {
        "queue": queue,
        "source": "harbor-support",
        "model_name": "harbor-assistant",
        "model_version": "v1",
    }
    first = OutputFactory(
        **common,
        priority=2,
        input=chat("How do I file a claim after a car accident?"),
        output_text=RIGHT_ANSWER,
        confidence=0.58,
        metadata={"channel": "chat", "customer_tier": "plus"},
        tags=["claims"],
    )
    second = OutputFactory(
        **common,
        priority=1,
        input=chat("What is my deductible for collision coverage?"),
        output_text=WRONG_ANSWER,
        confidence=0.41,
        metadata={"channel": "email", "customer_tier": "standard"},
        tags=["policy"],
    )
    OutputFactory(**common, input="Does my policy cover rental cars?", output_text="Yes.")
    return queue, first, second


def test_log_in_claim_approve_and_correct_with_the_keyboard(live_server, page, demo_queue):
    _queue, first, second = demo_queue
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(f"{live_server.url}/accounts/login/?next=/")
    page.get_by_label("Username").fill("reviewer")
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    page.get_by_role("link", name="Start reviewing low-confidence").click()

    # Claimed: the first item, its conversation, the guidelines and a running lease.
    expect(page.get_by_role("heading", name=f"Item #{first.pk}")).to_be_visible()
    expect(page.locator(".msg-user")).to_contain_text("How do I file a claim")
    expect(page.locator(".guidelines strong").first).to_have_text("Approve")
    countdown = page.locator("[data-countdown]").inner_text()
    assert countdown.startswith("4:") or countdown == "5:00", countdown
    page.screenshot(path=str(SCREENSHOTS / "workbench.png"))

    # `?` shows the keys; Escape closes them.
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()

    # `a` approves; the next item arrives without a page load.
    page.evaluate("window.__samePage = true")
    page.keyboard.press("a")
    expect(page.get_by_role("status")).to_contain_text(f"Approved item #{first.pk}.")
    expect(page.get_by_role("heading", name=f"Item #{second.pk}")).to_be_visible()
    assert page.evaluate("window.__samePage") is True
    review = Review.objects.get(output=first)
    assert (review.decision, review.reviewer.username) == ("approve", "reviewer")

    # `e` opens the editor on the output; typing shows a live word diff.
    page.keyboard.press("e")
    editor = page.get_by_label("Corrected output")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(WRONG_ANSWER)
    page.keyboard.press("Control+a")
    page.keyboard.type(CORRECTED)
    expect(page.locator("#diff del").first).to_have_text("1,000")
    expect(page.locator("#diff ins").first).to_have_text("500")
    expect(page.locator("#diff ins").last).to_contain_text("Next step: open Policy")
    expect(page.locator("#diff-summary")).to_contain_text("change")
    page.screenshot(path=str(SCREENSHOTS / "correction-editor.png"))

    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("status")).to_contain_text(f"Corrected item #{second.pk}.")
    assert page.evaluate("window.__samePage") is True
    review = Review.objects.get(output=second)
    assert review.decision == "correct"
    assert review.original_output == WRONG_ANSWER
    assert review.corrected_output == CORRECTED
    changes = [chunk for chunk in review.diff if chunk[0] != "equal"]
    assert changes == [
        ["replace", "1,000", "500"],
        ["insert", "", " Next step: open Policy > Documents in the app to check it."],
    ]
    second.refresh_from_db()
    assert second.final_output == CORRECTED and second.resolution == Output.Resolution.CORRECTED

    # A narrow window: the same page, stacked.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "workbench-narrow.png"), full_page=True)


def test_the_lease_counts_down_and_renews_itself_while_the_page_is_in_use(
    live_server, page, personas
):
    # A 12-second lease: the page renews it once less than half is left.
    queue = QueueFactory(name="short-leases", lease_seconds=12)
    item = OutputFactory(queue=queue)
    page.context.add_cookies(session_cookie_for(personas["reviewer"], live_server.url))
    page.goto(f"{live_server.url}/queues/{queue.pk}/work/")
    expect(page.get_by_role("heading", name=f"Item #{item.pk}")).to_be_visible()
    lease = Lease.objects.get(output=item)
    first_expiry = lease.expires_at
    page.mouse.move(10, 10)  # someone is at work

    def renewed() -> bool:
        lease.refresh_from_db()
        return lease.renewals >= 1

    # The page renews on its own clock (half the lease left): nothing to watch move meanwhile.
    wait_for(
        renewed,
        what="the page to renew its lease",
        describe=lambda: f"renewals {lease.renewals}, expires at {lease.expires_at}",
        poll=0.25,
        sleep=lambda seconds: page.wait_for_timeout(seconds * 1000),
    )
    assert lease.expires_at > first_expiry
    seconds = int(page.locator("[data-countdown]").inner_text().split(":")[1])
    assert 0 < seconds <= 12
