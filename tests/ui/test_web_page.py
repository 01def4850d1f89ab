"""The web page in a real browser against a live server with the API key on: it lists the
models, compresses from its form with live progress, plots the versions, runs two versions
side by side on a photo, and moves the alias that decides what ``/predict`` serves."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from service_support import TERMINAL, TEST_DATA
from ui_support import (
    API_KEY,
    REPORTED_MODEL,
    VIEWPORT,
    UiServer,
    give_api_key,
    open_page,
    screenshot,
)

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 300
PHOTO = TEST_DATA / "ultralytics_zidane.jpg"
#: the colours the page gives the first two people (app.js PALETTE), as RGB
PERSON_COLOURS = [(0x00, 0xE0, 0x8A), (0xFF, 0x6B, 0x3D)]


@pytest.fixture(scope="module")
def fp16_job(browser: Any, ui_server: UiServer) -> dict[str, Any]:
    """An fp16 quantization of v1 started from the page's form; what the page showed while
    it ran (sampled every 50 ms) and the job as the API tells it."""
    page, errors = open_page(browser, f"{ui_server.url}/ui#compress")
    points_before = int(page.get_attribute("#pareto", "data-points") or 0)
    page.select_option("#compress-source", "1")
    page.select_option("#compress-method", "quantize")
    page.select_option("fieldset[data-method=quantize] select[name=mode]", "fp16_weights")
    page.select_option("#compress-dataset", ui_server.dataset)
    page.select_option("#compress-eval", ui_server.dataset)
    page.fill("input[name=augment_copies]", "0")
    page.fill("input[name=latency_rounds]", "3")
    # three latency rounds on a busy machine can put lossless fp16 over the latency budget:
    # keep the result either way, this test is about the page
    page.fill("#compress-extra", '{"budget": {"on_over_budget": "keep"}}')
    preview = page.text_content("#compress-preview") or ""
    page.click("#compress-form button[type=submit]")
    give_api_key(page)
    page.wait_for_selector("#job:not([hidden])")
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        status = page.get_attribute("#job", "data-status") or ""
        progress = float(page.get_attribute("#job-progress", "data-progress") or 0)
        if not seen or seen[-1] != (status, progress):
            seen.append((status, progress))
        if status in TERMINAL:
            break
        page.wait_for_timeout(50)
    job_id = page.text_content("#job-id")
    page.wait_for_selector("#job-result:not([hidden])", timeout=10_000)
    page.wait_for_selector(f"#jobs-table tr[data-job='{job_id}'] .badge.{status}")
    screenshot(page, "compress")
    page.click("#job-result")
    page.wait_for_selector("#view-models:not([hidden]) tr.highlight")
    highlighted = page.get_attribute("#versions-table tr.highlight", "data-version")
    page.context.close()
    assert errors == [], "uncaught JavaScript errors"
    job = ui_server.client.get(f"/jobs/{job_id}").json()
    return {
        "seen": seen,
        "status": status,
        "job": job,
        "preview": preview,
        "points_before": points_before,
        "highlighted": highlighted,
    }


def test_root_opens_the_page_which_lists_blazepose_and_loads_nothing_from_elsewhere(
    browser: Any, ui_server: UiServer
) -> None:
    page = browser.new_context(viewport=VIEWPORT).new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{ui_server.url}/")
    page.wait_for_selector("body[data-ready=true]")
    assert urlsplit(page.url).path == "/ui"
    models = page.eval_on_selector_all("#model-select option", "o => o.map(x => x.value)")
    assert models == ["blazepose-full", REPORTED_MODEL]
    assert page.get_attribute("body", "data-model") == "blazepose-full"
    assert page.get_attribute("#versions-table tbody tr", "data-version") == "1"
    assert "ready" in (page.text_content("#versions-table tbody tr") or "")
    aliases = ui_server.client.get("/models/blazepose-full/aliases").json()
    assert page.text_content("#served-alias") == ("default" if "default" in aliases else "latest")
    assert page.is_visible("#lineage .node[data-version='1']")
    origins = {urlsplit(url).netloc for url in requested}
    assert origins == {urlsplit(ui_server.url).netloc}, requested
    assert page.is_hidden("#error")
    page.context.close()


def test_compress_form_shows_live_progress_and_the_new_version_on_the_plot(
    fp16_job: dict[str, Any], page: Any, ui_server: UiServer
) -> None:
    assert fp16_job["status"] == "succeeded", fp16_job["job"]
    assert '"mode": "fp16_weights"' in fp16_job["preview"]
    job = fp16_job["job"]
    assert job["status"] == "succeeded" and job["params"]["recipe"][0]["mode"] == "fp16_weights"
    new_version = job["result"]["version"]
    assert fp16_job["highlighted"] == str(new_version)
    progress = [p for _, p in fp16_job["seen"]]
    assert progress == sorted(progress), fp16_job["seen"]
    assert any(0 < p < 1 for p in progress), fp16_job["seen"]  # seen moving, not just done
    assert progress[-1] == 1.0
    assert fp16_job["points_before"] == 0  # only the job measured anything

    page.click("nav a[data-view=compare]")
    page.wait_for_selector("#view-compare:not([hidden])")
    plotted = page.eval_on_selector_all("#pareto g.point", "g => g.map(x => x.dataset.version)")
    assert set(plotted) >= {"1", str(new_version)}
    # the default-served version (alias ``default`` when stored, else ``latest``) is ringed
    aliases = ui_server.client.get("/models/blazepose-full/aliases").json()
    served = page.get_attribute("#pareto g.point[data-served=true]", "data-version")
    assert served == str(aliases.get("default", aliases["latest"]))
    rows = page.eval_on_selector_all(
        "#compare-table tbody tr", "r => r.map(x => x.dataset.version)"
    )
    assert set(rows) >= {"1", str(new_version)}
    screenshot(page, "compare")
    page.select_option("#plot-x", "size")
    assert page.locator("#pareto g.point").count() >= 2
    page.select_option("#plot-y", "oks")
    assert page.locator("#pareto g.point").count() >= 2


def _canvas_colour_pixels(page: Any, selector: str, rgb: tuple[int, int, int]) -> int:
    return int(
        page.eval_on_selector(
            selector,
            """(canvas, [r, g, b]) => {
                const { width, height } = canvas;
                const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
                let n = 0;
                for (let i = 0; i < data.length; i += 4)
                    if (data[i] === r && data[i + 1] === g && data[i + 2] === b) n += 1;
                return n;
            }""",
            list(rgb),
        )
    )


def test_try_it_draws_both_skeletons_with_scores_and_timing_side_by_side(
    page: Any, ui_server: UiServer
) -> None:
    page.click("nav a[data-view=try]")
    page.set_input_files("#try-image", str(PHOTO))
    page.select_option("#try-a", "@default")
    page.select_option("#try-b", "1")
    page.click("#try-form button[type=submit]")
    # /predict needs the key too where the server guards every POST
    page.wait_for_function(
        "document.querySelector('#key-dialog').open"
        " || document.querySelectorAll('.panel[data-people]').length === 2",
        timeout=120_000,
    )
    if page.is_visible("#key-dialog"):
        give_api_key(page)
    page.wait_for_function(
        "document.querySelectorAll('.panel[data-people]').length === 2", timeout=120_000
    )
    panels = page.locator(".panel")
    assert [panels.nth(i).get_attribute("data-people") for i in range(2)] == ["2", "2"]
    assert panels.nth(1).get_attribute("data-version") == "1"
    for index in range(2):
        canvas = f".panel:nth-child({index + 1}) canvas"
        assert page.eval_on_selector(canvas, "c => [c.width, c.height]") == [1280, 720]
        for colour in PERSON_COLOURS:  # one skeleton per person, each in its colour
            assert _canvas_colour_pixels(page, canvas, colour) > 200
        stages = panels.nth(index).locator("table.timing tr[data-stage]")
        names = [stages.nth(i).get_attribute("data-stage") for i in range(stages.count())]
        assert {"decode", "detect", "landmarks", "total"} <= set(names)

    # hovering a keypoint the API reports shows its name and score
    answer = ui_server.client.post(
        "/models/blazepose-full/versions/1/predict",
        files={"image": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")},
    ).json()
    keypoint = max(answer["people"][0]["keypoints"], key=lambda k: k["score"])
    box = page.locator(".panel:nth-child(2) canvas").bounding_box()
    scale = box["width"] / answer["image"]["width"]
    page.mouse.move(box["x"] + keypoint["x"] * scale, box["y"] + keypoint["y"] * scale)
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    assert keypoint["name"] in (tooltip.text_content() or "")
    assert f"{keypoint['score']:.2f}" in (tooltip.text_content() or "")
    screenshot(page, "try-it")


def _predicted_version(ui_server: UiServer, **form: str) -> int:
    response = ui_server.client.post(
        "/predict", files={"image": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")}, data=form
    )
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_alias_moved_from_the_page_changes_what_predict_serves(
    fp16_job: dict[str, Any], page: Any, ui_server: UiServer
) -> None:
    latest = fp16_job["job"]["result"]["version"]
    aliases = ui_server.client.get("/models/blazepose-full/aliases").json()
    # the stored ``default`` alias, once the server has one, decides a version-less /predict
    alias = "default" if "default" in aliases else "production"
    page.fill("#alias-name", alias)
    page.select_option("#alias-version", "1")
    page.click("#alias-form button[type=submit]")
    give_api_key(page)
    page.wait_for_selector(f"#versions-table tr[data-version='1'] .alias:text-is('{alias}')")
    assert ui_server.client.get("/models/blazepose-full/aliases").json()[alias] == 1
    assert _predicted_version(ui_server, version=alias) == 1
    if alias == "default":
        assert page.text_content("#served-version") == "v1"
        assert _predicted_version(ui_server) == 1
    else:
        assert page.text_content("#served-version") == f"v{latest}"
        assert _predicted_version(ui_server) == latest
    screenshot(page, "models")

    # the key is asked once: the next change goes through without the dialog
    page.select_option("#alias-version", str(latest))
    page.click("#alias-form button[type=submit]")
    page.wait_for_selector(f"#versions-table tr[data-version='{latest}'] .alias:text-is('{alias}')")
    assert not page.is_visible("#key-dialog")
    assert _predicted_version(ui_server, version=alias) == latest

    # an API error shows the API's own message
    page.fill("#alias-name", "latest")
    page.click("#alias-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "'latest' is maintained automatically" in (page.text_content("#error-text") or "")
    assert API_KEY not in (page.content())


def test_a_report_with_a_budget_verdict_and_an_ap_interval_is_shown(page: Any) -> None:
    page.select_option("#model-select", REPORTED_MODEL)
    page.wait_for_selector(f"body[data-model={REPORTED_MODEL}]")
    row = page.locator("#versions-table tr[data-version='2']")
    badge = row.locator("[data-within-budget]")
    assert badge.get_attribute("data-within-budget") == "false"
    assert badge.text_content() == "over"
    assert "mean_px 6.100 > 4" in (row.locator(".over").text_content() or "")
    assert "oks_vs_parent 0.83" in (badge.get_attribute("title") or "")
    assert "0.200 [0.150, 0.250]" in (row.text_content() or "")
    # v1 was never measured itself: its numbers are what v2 measured of its parent
    parent = page.locator("#versions-table tr[data-version='1'] td.inherited")
    assert [parent.nth(i).text_content() for i in range(parent.count())][:2] == [
        "50.0 ms",
        "0.260",
    ]
    page.click("nav a[data-view=compare]")
    assert page.locator("#pareto g.point.on-front").count() == 2  # faster but less accurate


def test_the_compress_form_shows_the_apis_refusal(page: Any) -> None:
    # the stored blazepose-full v1 is ONNX only: prune needs a torch model
    page.click("nav a[data-view=compress]")
    page.select_option("#compress-source", "1")
    page.select_option("#compress-method", "prune")
    page.click("#compress-form button[type=submit]")
    give_api_key(page)
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error-text") or ""
    assert "needs a torch model" in text and "unsupported_recipe" in text
    assert page.is_hidden("#job")


def test_a_job_started_from_the_page_is_cancelled_from_it(page: Any, ui_server: UiServer) -> None:
    page.click("nav a[data-view=compress]")
    page.select_option("#compress-source", "1")
    page.select_option("#compress-method", "quantize")
    page.select_option("#compress-dataset", ui_server.dataset)
    page.click("#compress-form button[type=submit]")
    give_api_key(page)
    page.wait_for_selector("#job:not([hidden])")
    page.click("#job-cancel")
    page.wait_for_selector("#job[data-status=cancelled]")
    job_id = page.text_content("#job-id")
    assert ui_server.client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    assert page.is_disabled("#job-cancel") and page.is_hidden("#job-result")
