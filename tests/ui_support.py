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

from model_store import Store

API_KEY = "ui-test-key"
#: Debian's package (``apt-get install chromium``); Playwright downloads no browser of its own.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: when set, the tests save a screenshot of each view there (docs/screenshots for the README)
SCREENSHOT_DIR = os.environ.get("POSECOMPRESS_UI_SCREENSHOTS")
VIEWPORT = {"width": 1280, "height": 860}
REPORTED_MODEL = "budgeted"
#: a compressed version's report as the compress job writes it, with a budget verdict over
#: its limit (shaped like pose_core.compression.budget's) and an AP interval
OVER_BUDGET_REPORT: dict[str, Any] = {
    "latency_ms": {"p50": 40.0, "p95": 44.0},
    "parent_latency_ms": {"p50": 50.0, "p95": 55.0},
    "latency_ratio": 0.8,
    "accuracy": {"ap": 0.2, "ap_ci": [0.15, 0.25]},
    "parent_accuracy": {"ap": 0.26},
    "fidelity": {"mean_landmark_px": 6.1, "mean_oks_vs_parent": 0.83},
    "budget": {
        "within_budget": False,
        "steps": [
            {
                "within_budget": False,
                "measured": {"mean_px": 6.1, "oks_vs_parent": 0.83, "latency_ratio": 0.8},
                "over": ["mean_px 6.100 > 4"],
            }
        ],
    },
}


@dataclass
class UiServer:
    live: LiveServer
    client: httpx.Client  # sends the API key
    dataset: str  # the labelled dev subset's id

    @property
    def url(self) -> str:
        return self.live.url


def store_reported_pair(store: Store, model_onnx: Path) -> None:
    """Model ``budgeted``: v1 and a child v2 with :data:`OVER_BUDGET_REPORT`."""
    for parent, report in ((None, None), (1, OVER_BUDGET_REPORT)):
        recipe = {"steps": [{"method": "prune"}]} if parent else {"source": "upload"}
        pending = store.models.create_pending_version(
            REPORTED_MODEL, format="onnx", parent=parent, recipe=recipe
        )
        store.models.finalize_version(
            REPORTED_MODEL, pending.number, {"model": model_onnx}, report=report
        )


def chromium_path() -> str:
    """Chromium's executable, or a skip saying how to install it."""
    for candidate in CHROMIUM_CANDIDATES:
        if shutil.which(candidate):
            return candidate
    pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does it)")


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """``url`` in a fresh browser context (its own API key storage), once the page has loaded
    its data; and the list that collects the page's uncaught JavaScript errors."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page, errors


def give_api_key(page: Any) -> None:
    """Answer the page's API-key dialog (it opens on the first 401)."""
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", API_KEY)
    page.click("#key-save")


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=True)
