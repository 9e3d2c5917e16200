"""Headless Chromium from Debian's ``chromium`` package, driven by Playwright.

No browser is downloaded: Playwright launches ``/usr/bin/chromium``. Without
it (or without Playwright) every browser test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("JUKINET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API keeps an event loop running in this
    thread while it is open, which would break later tests that use asyncio.run."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests skipped: {CHROMIUM} is missing (install Debian's chromium and fonts-noto-cjk: apt-get install -y chromium fonts-noto-cjk)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests skipped: playwright is not installed (pip install -r requirements.lock)")
    if shutil.which("fc-list") and "Noto Sans CJK" not in os.popen("fc-list").read():
        pytest.skip("browser tests skipped: fonts-noto-cjk is missing (Japanese glyphs would render as boxes)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshot(tmp_path):
    """Save a screenshot under the test's temporary directory, and under
    docs/screenshots/ when JUKINET_UPDATE_SCREENSHOTS=1."""

    def take(page, name: str, *, full_page: bool = True) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if os.environ.get("JUKINET_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
        return path

    return take
