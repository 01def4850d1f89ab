from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from service_support import assert_error_shape

from app.embedded.worker_status import WorkerStatus, status_path, write_status


def test_health_and_ready(client: TestClient):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_ready_is_503_when_the_broker_is_unreachable(make_client: Callable[..., TestClient]):
    client = make_client(redis_url="redis://127.0.0.1:1/0")
    response = client.get("/ready")
    assert response.status_code == 503
    assert_error_shape(response.json(), "not_ready")
    assert response.json()["error"]["detail"]["database"] == "ok"
    assert response.json()["error"]["detail"]["broker"].startswith("unreachable")


def test_framework_errors_share_the_error_shape(client: TestClient):
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert_error_shape(missing.json(), "not_found")
    wrong_method = client.put("/health")
    assert wrong_method.status_code == 405
    assert_error_shape(wrong_method.json(), "method_not_allowed")
    invalid = client.get("/jobs", params={"limit": "many"})
    assert invalid.status_code == 422
    assert_error_shape(invalid.json(), "validation_error")
    assert invalid.json()["error"]["detail"][0]["loc"] == ["query", "limit"]
    unknown_model = client.get("/models/nope")
    assert unknown_model.status_code == 404
    assert_error_shape(unknown_model.json(), "not_found")


def test_openapi_and_docs(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/models", "/models/{name}/versions", "/jobs/{job_id}", "/datasets", "/ready"):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_and_jobs(client: TestClient):
    client.get("/health")
    client.get("/models/unknown")
    text = client.get("/metrics").text
    assert 'posecompress_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert 'route="/models/{name}",status="404"' in text
    assert 'posecompress_jobs{status="queued"} 0.0' in text
    assert "posecompress_http_request_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/datasets", "GET, HEAD, POST"),
        ("PUT", "/models", "GET, HEAD, POST"),
        ("POST", "/models/x/versions/1", "DELETE, GET, HEAD"),
        ("PATCH", "/models/x/aliases/prod", "DELETE, PUT"),
    ],
)
def test_405_allow_names_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert_error_shape(response.json(), "method_not_allowed")


def test_unhandled_error_is_500_and_closes_the_connection(client: TestClient):
    def explode() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/explode", explode)  # type: ignore[attr-defined]
    client.app.openapi_schema = None  # type: ignore[attr-defined]
    failing = TestClient(client.app, raise_server_exceptions=False)
    response = failing.get("/explode")
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    assert_error_shape(response.json(), "internal_error")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_ready_and_metrics_report_the_supervised_worker(client: TestClient):
    data_dir = client.app.state.settings.resolved_data_dir  # type: ignore[attr-defined]
    assert "worker" not in client.get("/ready").json()["checks"]  # posecompress api: none
    assert "posecompress_worker_up" not in client.get("/metrics").text

    down = WorkerStatus(os.getpid(), up=False, exits_last_minute=7, next_start_in_s=32.0)
    write_status(status_path(data_dir), down)
    ready = client.get("/ready")
    assert ready.status_code == 200  # the API still serves predict
    assert ready.json()["status"] == "degraded"
    worker = ready.json()["checks"]["worker"]
    assert worker == "down: 7 exits in the last minute, next start in 32 s"
    text = client.get("/metrics").text
    assert "posecompress_worker_up 0.0" in text
    assert "posecompress_worker_exits_last_minute 7.0" in text

    write_status(status_path(data_dir), WorkerStatus(os.getpid(), True, 1, None))
    assert client.get("/ready").json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok", "worker": "ok"},
    }
    write_status(status_path(data_dir), WorkerStatus(_dead_pid(), False, 7, 1.0))
    assert "worker" not in client.get("/ready").json()["checks"]  # left by a dead supervisor
