"""Browser tests of the web page: a live ``posecompress serve`` (API key on, BlazePose-Full
stored, the labelled dev subset uploaded) driven by Playwright through Debian's Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from compress_support import dev_subset_zip
from service_support import live_server, remove, short_tmp_dir
from serving_support import cached_bundle, store_builtin
from ui_support import API_KEY, UiServer, chromium_path, open_page, store_reported_pair

from model_store import open_store
from pose_core.builtin import BlazePoseBundle


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:  # -> playwright.sync_api.Browser
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def ui_server(blazepose_assets) -> Iterator[UiServer]:
    folder = short_tmp_dir("pc-ui-")
    data_dir = folder / "data"
    store = open_store(f"sqlite:///{data_dir / 'metadata.sqlite3'}", data_dir)
    bundle = cached_bundle(blazepose_assets.landmark_tflite.parent)
    # its ONNX graphs only: quantizing a version with a torch form exports it through torch
    # again, over a minute on 2 busy cores, where the stored graph takes seconds
    onnx_only = {role: bundle.artifacts[role] for role in ("model", "detector")}
    store_builtin(store, BlazePoseBundle(artifacts=onnx_only, manifest=bundle.manifest))
    store_reported_pair(store, bundle.artifacts["model"])
    store.close()
    env = {"POSECOMPRESS_API_KEY": API_KEY, "POSECOMPRESS_ORT_THREADS": "1"}
    try:
        with live_server(data_dir, env=env) as live:
            client = httpx.Client(base_url=live.url, timeout=120, headers={"X-API-Key": API_KEY})
            uploaded = client.post(
                "/datasets",
                files={"file": ("dev.zip", dev_subset_zip())},
                data={"name": "dev-subset"},
            )
            assert uploaded.status_code == 201, uploaded.text
            yield UiServer(live, client, str(uploaded.json()["id"]))
    finally:
        remove(folder)


@pytest.fixture
def page(browser: Any, ui_server: UiServer) -> Iterator[Any]:  # -> playwright.sync_api.Page
    """The page loaded from ``/`` in a fresh browser context (the API key is asked again)."""
    page, errors = open_page(browser, f"{ui_server.url}/")
    yield page
    page.context.close()
    assert errors == [], "uncaught JavaScript errors"
