"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

Nothing here downloads a browser. Where Chromium is missing the tests fail, loudly: a skipped
browser test would let a broken workbench through CI unnoticed."""

import os
from pathlib import Path

import pytest

from ..waiting import BROWSER_ACTION_SECONDS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls (set-up and
# checks, never concurrent with the live server's requests on the same connection) must not be
# refused as "called from an async context".
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def chromium_browser():
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"No Chromium at {CHROMIUM}: the browser tests need Debian's packages "
            "(`apt-get install -y chromium chromium-driver`, which `make test` tries). "
            "They never download a browser, and they do not skip.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium_browser):
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(BROWSER_ACTION_SECONDS * 1000)
    yield page
    context.close()
