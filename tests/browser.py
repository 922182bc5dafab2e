"""Headless Chromium for browser tests: Debian's chromium driven by playwright (no browser download)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(driver):  # noqa: ANN001, ANN201 - playwright objects
    """A headless browser from ``driver`` (a started ``sync_playwright()``)."""
    return driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


def open_page(driver, path):  # noqa: ANN001, ANN201 - playwright objects
    """The browser and a 1200 x 900 page showing the file ``path`` (close the browser when done)."""
    browser = launch_chromium(driver)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(path.resolve().as_uri())
    return browser, page
