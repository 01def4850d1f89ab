"""Torch-only compression of uploaded ONNX pose models (their onnx2torch form): a ResNet-18-style
SimpleBaseline ``.onnx`` (17 heatmaps of 64 x 48 from 256 x 192) uploaded with its manifest
through POST /models, pruned 30% through POST .../compress, served by /predict; an RTMPose-like
SimCC net factorized and distilled the same way; the 422s of recipes that cannot run on such a
model (onnx2torch missing, landmark-only settings).

The job body runs in this process on the app's store (the Celery task would run the same
function in a worker). The net's weights are random (seeded; tests/pose_nets_support.py), so
its pruned copy cannot stay within the default fidelity budget (4 px, OKS 0.9 against an
untrained parent whose heatmaps have no clear peaks): the step says
``on_over_budget: "keep"`` and the test checks the stored, measured result instead."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from compress_support import post_dev_subset
from fastapi.testclient import TestClient
from pose_nets_support import BASELINE_HW, BASELINE_MANIFEST, export_pose_net, simple_baseline
from service_support import assert_error_shape
from serving_support import cached_bundle, store_builtin
from simcc_support import SIMCC_MANIFEST, export_simcc_onnx, tiny_simcc

from app.main import create_app
from common.settings import Settings
from model_store import open_store
from pose_core.importers import onnx_torch
from pose_core.importers.onnx_torch import ONNX2TORCH_INSTALL, onnx2torch_available
from pose_core.keypoints import COCO17_NAMES

TESTS = Path(__file__).resolve().parents[1]
ZIDANE = TESTS / "data" / "ultralytics_zidane.jpg"
KEEP = {"on_over_budget": "keep"}
PRUNE = {"method": "prune", "ratio": 0.3, "recovery": {"steps": 4, "batch_size": 2}, "budget": KEEP}


@pytest.fixture(scope="module")
def baseline_onnx(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("baseline") / "baseline.onnx"
    return export_pose_net(simple_baseline(), path, BASELINE_HW, ["heatmaps"])


@pytest.fixture
def client(blazepose_assets: Any, tmp_path: Path, broker_url: str) -> Iterator[TestClient]:
    """The app on a store holding the built-in model (its person detector serves uploads)."""
    folder = tmp_path / "data"
    store = open_store(f"sqlite:///{folder / 'metadata.sqlite3'}", folder)
    try:
        store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    finally:
        store.close()
    settings = Settings(data_dir=folder, redis_url=broker_url, ort_threads=1)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def baseline(client: TestClient, baseline_onnx: bytes) -> str:
    response = client.post(
        "/models",
        data={"name": "baseline", "manifest": json.dumps(BASELINE_MANIFEST)},
        files={"file": ("baseline.onnx", baseline_onnx)},
    )
    assert response.status_code == 201, response.text
    return "baseline"


@pytest.fixture
def dataset(client: TestClient) -> str:
    return post_dev_subset(client)


def _compress(client: TestClient, recipe: list[dict[str, Any]], dataset: str, **extra: Any) -> Any:
    body = {"recipe": recipe, "dataset": dataset, "latency_rounds": 5, "augment_copies": 1}
    return client.post("/models/baseline/versions/1/compress", json={**body, **extra})


def _run_job(client: TestClient, job_id: str, tmp_path: Path) -> dict[str, Any]:
    """Claim the queued job and run the compress task's body on the app's store."""
    from workers.runtime import JobContext
    from workers.tasks.compress import compress_job

    store = client.app.state.store  # type: ignore[attr-defined]
    claimed = store.jobs.claim(job_id, max_attempts=3, stale_after_s=600).job
    assert claimed is not None
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    settings = client.app.state.settings  # type: ignore[attr-defined]
    result = compress_job(JobContext(store, claimed, settings, scratch))
    store.jobs.succeed(job_id, model=result.model, version=result.version, message=result.message)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    return dict(job)


@pytest.mark.slow
@pytest.mark.skipif(not onnx2torch_available(), reason=f"needs onnx2torch: {ONNX2TORCH_INSTALL}")
def test_an_uploaded_simple_baseline_is_pruned_and_the_result_serves(
    client: TestClient, baseline: str, dataset: str, tmp_path: Path
) -> None:
    response = _compress(client, [PRUNE], dataset, eval_dataset=dataset)
    assert response.status_code == 202, response.text
    _run_job(client, response.json()["job_id"], tmp_path)

    child = client.get("/models/baseline/versions/2").json()
    assert child["status"] == "ready" and child["parent"] == 1
    assert {a["role"] for a in child["artifacts"]} == {"model"}  # re-derived from ONNX
    assert child["manifest"]["kind"] == "heatmap"
    report = client.get("/models/baseline/versions/2/report").json()
    assert report["compressed_roles"] == {"model": ["prune"], "detector": []}
    assert report["torch_form"]["converter"] == "onnx2torch 1.5.15"
    assert "v1" in report["torch_form"]["from"]
    pruning = report["compression"]["pruning"]
    assert pruning["heads_kept"] >= 1  # the 17-heatmap conv
    assert report["params"] < report["parent_params"]
    assert report["macs"] < report["parent_macs"]
    assert report["artifact_bytes"] < report["parent_artifact_bytes"]
    assert report["compression"]["recovery"]["holdout_metric"] == "output_nmse"
    fidelity = report["fidelity"]
    assert fidelity["held_out"] and fidelity["n_crops"] >= 1
    assert 0 <= fidelity["mean_oks_vs_parent"] <= 1 and fidelity["mean_landmark_px"] >= 0
    assert report["budget"]["steps"][0]["measured"]["mean_px"] == pytest.approx(
        fidelity["mean_landmark_px"], rel=1e-6
    )
    for accuracy in (report["accuracy"], report["parent_accuracy"]):  # decoded as heatmaps
        assert accuracy["mode"] == "gt-boxes" and 0 <= accuracy["ap"] <= 1
        assert accuracy["n_people"] >= 1
    model = onnx.load_from_string(_artifact(client, "baseline", 2))
    assert [o.name for o in model.graph.output] == ["heatmaps"]

    served = client.post(
        "/predict",
        data={"model": "baseline", "version": "2", "min_score": "0"},
        files={"image": ("zidane.jpg", ZIDANE.read_bytes(), "image/jpeg")},
    )
    assert served.status_code == 200, served.text
    body = served.json()
    assert body["version"] == 2 and body["people"]
    for person in body["people"]:
        assert [k["name"] for k in person["keypoints"]] == list(COCO17_NAMES)


@pytest.mark.slow
@pytest.mark.skipif(not onnx2torch_available(), reason=f"needs onnx2torch: {ONNX2TORCH_INSTALL}")
def test_an_uploaded_simcc_net_is_factorized_distilled_and_served(
    client: TestClient, dataset: str, tmp_path: Path
) -> None:
    content = export_simcc_onnx(tiny_simcc(seed=2), tmp_path / "simcc.onnx")
    response = client.post(
        "/models",
        data={"name": "simcc", "manifest": json.dumps(SIMCC_MANIFEST)},
        files={"file": ("simcc.onnx", content)},
    )
    assert response.status_code == 201, response.text
    recovery = {"steps": 3, "batch_size": 2}
    recipe = [
        {"method": "lowrank", "params_ratio": 0.7, "recovery": recovery, "budget": KEEP},
        {"method": "distill", **recovery, "budget": KEEP},
    ]
    body = {"recipe": recipe, "dataset": dataset, "latency_rounds": 5}
    response = client.post("/models/simcc/versions/1/compress", json=body)
    assert response.status_code == 202, response.text
    _run_job(client, response.json()["job_id"], tmp_path)

    report = client.get("/models/simcc/versions/2/report").json()
    lowrank, distill = report["compression"]["steps"]
    assert lowrank["method"] == "lowrank" and lowrank["decomposition"]["layers"]
    assert distill["distill"]["holdout_metric"] == "output_nmse"
    assert report["params"] < report["parent_params"]
    graph = onnx.load_from_string(_artifact(client, "simcc", 2)).graph
    assert [o.name for o in graph.output] == ["simcc_x", "simcc_y"]
    served = client.post(
        "/predict",
        data={"model": "simcc", "version": "2", "min_score": "0"},
        files={"image": ("zidane.jpg", ZIDANE.read_bytes(), "image/jpeg")},
    )
    assert served.status_code == 200, served.text
    for person in served.json()["people"]:
        assert [k["name"] for k in person["keypoints"]] == list(COCO17_NAMES)


def _artifact(client: TestClient, model: str, number: int) -> bytes:
    store = client.app.state.store  # type: ignore[attr-defined]
    path = store.models.artifact_path(model, number, "model")
    return bytes(path.read_bytes())


def test_torch_steps_on_an_upload_without_onnx2torch_are_422_naming_the_install(
    client: TestClient, baseline: str, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_torch, "onnx2torch_available", lambda: False)
    for step in (PRUNE, {"method": "lowrank", "params_ratio": 0.5}, {"method": "distill"}):
        response = _compress(client, [step], dataset)
        assert response.status_code == 422, response.text
        assert_error_shape(response.json(), "unsupported_recipe")
        error = response.json()["error"]
        assert "pip install --no-deps onnx2torch==1.5.15" in error["message"]
        assert error["detail"] == {"step": 0, "install": ONNX2TORCH_INSTALL}
    assert client.get("/jobs").json() == []


def test_landmark_only_settings_on_an_upload_are_422(
    client: TestClient, baseline: str, dataset: str
) -> None:
    for step, named in (
        ({**PRUNE, "importance": "taylor"}, "importance 'taylor'"),
        ({"method": "prune", "target_macs_ratio": 0.6, "allocation": "sensitivity"}, "allocation"),
        ({"method": "quantize"}, "method 'quantize'"),
    ):
        response = _compress(client, [step], dataset)
        assert response.status_code == 422, response.text
        assert_error_shape(response.json(), "unsupported_recipe")
        assert named in response.json()["error"]["message"]
    assert client.get("/jobs").json() == []
