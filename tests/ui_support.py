"""Helpers of the web page's browser tests (tests/ui): the live server they drive, Debian's
Chromium, the page's API-key dialog and the README's screenshots."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import LiveServer

API_KEY = "ui-test-key"
#: Debian's package (``apt-get install chromium``); Playwright downloads no browser of its own.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: when set, the tests save a screenshot of each view there (docs/screenshots for the README)
SCREENSHOT_DIR = os.environ.get("POSECOMPRESS_UI_SCREENSHOTS")
VIEWPORT = {"width": 1280, "height": 860}


@dataclass
class UiServer:
    live: LiveServer
    client: httpx.Client  # sends the API key
    dataset: str  # the labelled dev subset's id

    @property
    def url(self) -> str:
        return self.live.url


def chromium_path() -> str:
    """Chromium's executable, or a skip saying how to install it."""
    for candidate in CHROMIUM_CANDIDATES:
        if shutil.which(candidate):
            return candidate
    pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does it)")


def open_page(browser: Any, url: str) -> Any:  # -> playwright.sync_api.Page
    """``url`` in a fresh browser context (its own API key storage), once the page has loaded
    its data."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def give_api_key(page: Any) -> None:
    """Answer the page's API-key dialog (it opens on the first 401)."""
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", API_KEY)
    page.click("#key-save")


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=True)
