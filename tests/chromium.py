"""Debian's Chromium driven by Playwright, for the tests that look at pages.

``make test`` installs the ``chromium`` package when it is missing (``make browser``); Playwright's
own browser download is never used: the Debian binary is passed as ``executable_path``. Without a
browser the page tests are skipped with a message, unless ``MAGPIE_REQUIRE_BROWSER=1`` (set by
``.ci/run``) makes them fail instead.

>>> def test_page(page, server):  # doctest: +SKIP
...     page.goto(server.url + "/docs")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("MAGPIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REQUIRE_BROWSER = os.environ.get("MAGPIE_REQUIRE_BROWSER") == "1"
ROOT = Path(__file__).resolve().parent.parent
# Screenshots go to build/screenshots/ (ignored by git), so that `make test` leaves the tree as it was;
# `make screenshots` sets MAGPIE_SCREENSHOTS=docs/img to refresh the ones the documentation shows.
SCREENSHOTS = ROOT / (os.environ.get("MAGPIE_SCREENSHOTS") or "build/screenshots")

# The flags that keep a headless Chromium quiet on a machine without internet, running as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module.

    Playwright's synchronous API keeps an asyncio loop running in the calling thread while it is
    open, so it must be closed before other modules' tests call ``asyncio.run``.
    """
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} (run `make browser` to install Debian's chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message + "; MAGPIE_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop width, asking for English pages.

    The dashboard follows the browser's language; the Korean pages have their own tests
    (tests/dashboard/test_i18n.py), which ask for Korean with ``locale="ko-KR"``.
    """
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under ``SCREENSHOTS`` at desktop and phone width; return the desktop one."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    desktop = SCREENSHOTS / f"{name}.png"
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(desktop), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    return desktop
