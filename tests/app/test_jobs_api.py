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


@pytest.mark.parametrize("tolerance", ["Infinity", "NaN", "-Infinity", 0])
def test_export_tolerance_must_be_a_finite_positive_number(
    client: TestClient, tiny_onnx: Path, tolerance: object
):
    with tiny_onnx.open("rb") as handle:
        client.post("/models", data={"name": "tiny"}, files={"file": ("tiny.onnx", handle)})
    response = client.post("/models/tiny/versions/1/export", json={"tolerance": tolerance})
    assert response.status_code == 422, response.text
    assert client.get("/jobs").json() == []
