"""``posecompress eval`` (local, real store and model) and the pure parts of
``posecompress compress`` (its server round trip is in tests/e2e/test_compress_jobs.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from compress_support import export_tiny_graph_model, store_version_1
from service_support import TEST_DATA, cli_env, run_cli

from app.commands.compress import load_recipe, progress_bar
from app.report_table import flatten, format_table, with_intervals
from model_store import open_store


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=cli_env(POSECOMPRESS_ORT_THREADS="1"))


@pytest.mark.slow
def test_eval_prints_the_report_and_attaches_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = open_store(f"sqlite:///{data_dir / 'metadata.sqlite3'}", data_dir)
    store_version_1(store, "tiny", export_tiny_graph_model(tmp_path / "tiny"))
    dataset = TEST_DATA / "dev_subset"
    args = ["eval", "--dataset", str(dataset), "--model", "tiny:1", "--data-dir", str(data_dir)]

    table = _cli(*args)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()[-2:]
    assert header.split()[:6] == ["model", "mode", "n_images", "n_people", "ap", "ap_ci"]
    assert row.split()[:3] == ["tiny:1", "gt-boxes", "3"]

    attached = _cli(*args, "--json", "--attach")
    assert attached.returncode == 0, attached.stderr
    report = json.loads(attached.stdout)
    assert report["mode"] == "gt-boxes" and 0 <= report["ap"] <= 1
    interval = report["ap_ci"]
    assert f"[{interval['low']:.3f}, {interval['high']:.3f}]" in row
    assert (interval["unit"], interval["n_units"]) == ("person", report["n_people"])
    stored = store.models.get_version("tiny", 1).report or {}
    assert stored["evaluation"][str(dataset.resolve())]["gt-boxes"]["ap"] == report["ap"]

    missing = _cli(
        "eval", "--dataset", str(dataset), "--model", "nope", "--data-dir", str(data_dir)
    )
    assert missing.returncode == 2 and "nope" in missing.stderr
    no_detector = _cli(*args, "--mode", "detector")
    assert no_detector.returncode == 2 and "detector" in no_detector.stderr
    store.close()


def test_recipe_files_and_progress_bar(tmp_path: Path) -> None:
    steps = [{"method": "prune", "ratio": 0.3}, {"method": "quantize"}]
    listed, wrapped, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    listed.write_text(json.dumps(steps))
    wrapped.write_text(json.dumps({"recipe": steps}))
    bad.write_text(json.dumps({"steps": steps}))
    assert load_recipe(listed) == steps == load_recipe(wrapped)
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_recipe(bad)
    assert progress_bar(0.5, "half", width=10).startswith("\r[#####.....]  50.0% half")
    assert progress_bar(1.5, "", width=4).startswith("\r[####]")


def test_flatten_and_text_table() -> None:
    flat = flatten({"a": {"b": 1, "c": {"d": 2.5}}, "e": [1, 2], "f": None})
    assert flat == {"a.b": 1, "a.c.d": 2.5, "e": [1, 2], "f": None}
    interval = {"ap": 0.25, "ap_ci": {"low": 0.2104, "high": 0.30, "level": 0.95}}
    cells = with_intervals(flatten({"accuracy": interval}))
    assert cells["accuracy.ap_ci"] == "[0.210, 0.300]" and cells["accuracy.ap_ci.low"] == 0.2104
    text = format_table([{"x": 0.123456, "y": None}, {"x": 2, "y": "z"}], ["x", "y"])
    assert text.splitlines() == ["x       y", "0.1235   ", "2       z"]
