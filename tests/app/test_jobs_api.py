"""Job endpoints without a worker: rows are created, messages reach the real broker,
cancellation is recorded. Running jobs through a real worker is in tests/e2e."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from service_support import assert_error_shape


def _broker(client: TestClient) -> redis.Redis:
    url = client.app.state.settings.effective_redis_url  # type: ignore[attr-defined]
    return redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"))


def test_export_answers_202_with_location_and_queues_a_message(client: TestClient, tiny_onnx: Path):
    with tiny_onnx.open("rb") as handle:
        client.post("/models", data={"name": "tiny"}, files={"file": ("tiny.onnx", handle)})
    broker = _broker(client)
    broker.delete("posecompress")
    response = client.post("/models/tiny/versions/latest/export", json={"verify_samples": 3})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['job_id']}"
    assert job["status"] == "queued" and job["kind"] == "export_onnx"
    assert job["params"]["version"] == 1 and job["params"]["verify_samples"] == 3
    assert broker.llen("posecompress") == 1
    assert job["job_id"].encode() in broker.lindex("posecompress", 0)

    assert client.get(response.headers["location"]).json()["status"] == "queued"
    assert [j["id"] for j in client.get("/jobs", params={"status": "queued"}).json()] == [job["id"]]

    cancelled = client.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.delete(f"/jobs/{job['id']}")
    assert again.status_code == 409
    assert_error_shape(again.json(), "conflict")
    assert 'posecompress_jobs{status="cancelled"} 1.0' in client.get("/metrics").text


def test_export_of_unknown_version_is_404_and_bad_params_422(client: TestClient, tiny_onnx: Path):
    assert client.post("/models/none/versions/1/export").status_code == 404
    with tiny_onnx.open("rb") as handle:
        client.post("/models", data={"name": "tiny"}, files={"file": ("tiny.onnx", handle)})
    bad = client.post("/models/tiny/versions/1/export", json={"optimization": "turbo"})
    assert bad.status_code == 422
    assert_error_shape(bad.json(), "validation_error")
    assert client.get("/jobs").json() == []
    assert client.get("/jobs/does-not-exist").status_code == 404


def _store_tiny_graph_model(client: TestClient, tmp_path: Path) -> None:
    from compress_support import export_tiny_graph_model, store_version_1

    store = client.app.state.store  # type: ignore[attr-defined]
    store_version_1(store, "graph", export_tiny_graph_model(tmp_path / "graph"))


def test_tflite_export_queues_its_job_or_says_why_not(
    client: TestClient, tiny_onnx: Path, tmp_path: Path, monkeypatch
):
    from pose_core import export_tflite

    with tiny_onnx.open("rb") as handle:
        client.post("/models", data={"name": "tiny"}, files={"file": ("tiny.onnx", handle)})
    no_torch = client.post("/models/tiny/versions/1/export", json={"format": "tflite"})
    assert no_torch.status_code == 422
    assert_error_shape(no_torch.json(), "unsupported_export")

    _store_tiny_graph_model(client, tmp_path)
    bad = client.post("/models/graph/versions/1/export", json={"format": "tflite",
                                                               "precision": "int3"})
    assert bad.status_code == 422
    assert_error_shape(bad.json(), "validation_error")
    unknown = client.post("/models/graph/versions/1/export", json={"format": "coreml"})
    assert unknown.status_code == 422

    monkeypatch.setattr(export_tflite, "tflite_export_available", lambda: False)
    missing = client.post("/models/graph/versions/1/export", json={"format": "tflite"})
    assert missing.status_code == 422
    assert_error_shape(missing.json(), "extra_missing")
    assert ".[edge]" in missing.json()["error"]["message"]
    assert client.get("/jobs").json() == []

    monkeypatch.setattr(export_tflite, "tflite_export_available", lambda: True)
    response = client.post("/models/graph/versions/1/export",
                           json={"format": "tflite", "precision": "fp16"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "export_tflite"
    assert job["params"] == {"model": "graph", "version": 1, "format": "tflite",
                             "precision": "fp16", "verify_samples": 8, "tolerance": None}
@pytest.mark.parametrize("tolerance", ["Infinity", "NaN", "-Infinity", 0])
def test_export_tolerance_must_be_a_finite_positive_number(
    client: TestClient, tiny_onnx: Path, tolerance: object
):
    with tiny_onnx.open("rb") as handle:
        client.post("/models", data={"name": "tiny"}, files={"file": ("tiny.onnx", handle)})
    response = client.post("/models/tiny/versions/1/export", json={"tolerance": tolerance})
    assert response.status_code == 422, response.text
    assert client.get("/jobs").json() == []
