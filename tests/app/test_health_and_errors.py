from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from service_support import assert_error_shape


def test_health_and_ready(client: TestClient):
    assert client.get("/health").json() == {"status": "ok", "checks": {}}
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
