"""Headless Chromium for browser tests: Debian's chromium driven by playwright (no browser download)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(driver):  # noqa: ANN001, ANN201 - playwright objects
    """A headless browser from ``driver`` (a started ``sync_playwright()``)."""
    return driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
