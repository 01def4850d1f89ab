"""``posecompress serve`` as a real subprocess: embedded Redis, Celery worker, SQLite,
uvicorn. Exercises the whole path through the real worker, a worker SIGKILLed in the
middle of a job, cancellation, and a restart on the same data directory."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import (
    TERMINAL,
    LiveServer,
    assert_ready_versions_are_intact,
    dataset_zip,
    export_tiny_onnx,
    live_server,
    processes_in_sessions,
    remove,
    short_tmp_dir,
    upload_model,
    wait_job,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Iterator[Path]:
    folder = short_tmp_dir("pc-e2e-")
    yield folder / "data"
    remove(folder)


def test_serve_runs_a_real_job_and_restarts_on_the_same_data(data_dir: Path, tmp_path: Path):
    model = export_tiny_onnx(tmp_path / "tiny.onnx")
    with live_server(data_dir) as server:
        print(f"\nserve -> /ready 200 in {server.ready_after_s:.2f} s")
        client = httpx.Client(base_url=server.url, timeout=30)
        dataset = client.post(
            "/datasets", data={"name": "photos"}, files={"file": ("d.zip", dataset_zip())}
        )
        assert dataset.status_code == 201, dataset.text
        uploaded = upload_model(client, model, "tiny")
        assert uploaded["version"] == 1

        started = client.post("/models/tiny/versions/1/export", json={"verify_samples": 8})
        assert started.status_code == 202
        job = wait_job(client, started.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"] == {"model": "tiny", "version": 2}
        assert job["progress"] == 1.0 and job["attempts"] == 1
        assert job["started_at"] and job["finished_at"]
        child = client.get("/models/tiny/versions/2").json()
        assert child["parent"] == 1 and child["created_by_job"] == job["id"]
        assert child["aliases"] == ["latest"]
        assert_ready_versions_are_intact(client, "tiny")
        metrics = client.get("/metrics").text
        assert 'posecompress_jobs{status="succeeded"} 1.0' in metrics

    with live_server(data_dir) as again:
        client = httpx.Client(base_url=again.url, timeout=30)
        assert client.get("/models/tiny").json()["latest"] == 2
        assert client.get(f"/datasets/{dataset.json()['id']}").json()["image_count"] == 2
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
        assert_ready_versions_are_intact(client, "tiny")


def _wait_until_running(client: httpx.Client, job_id: str, min_progress: float) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] not in TERMINAL, f"job ended before it could be interrupted: {job}"
        if job["status"] == "running" and job["progress"] >= min_progress:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} never reached progress {min_progress}")


def _slow_job(client: httpx.Client, tmp_path: Path) -> str:
    # A wider, larger model and many parity samples: tens of seconds of real ONNX work.
    model = export_tiny_onnx(tmp_path / "wide.onnx", width=32, size=128)
    upload_model(client, model, "wide")
    started = client.post("/models/wide/versions/1/export", json={"verify_samples": 600})
    assert started.status_code == 202
    return str(started.json()["job_id"])


@pytest.mark.parametrize("target", ["pool process", "whole worker"])
def test_worker_killed_mid_job_never_leaves_a_bad_ready_version(
    data_dir: Path, tmp_path: Path, target: str
):
    """SIGKILL the process running the job (Celery re-delivers the message), or the whole
    worker with its pool (``serve`` restarts it and startup recovery re-queues the job)."""
    with live_server(data_dir) as server:
        client = httpx.Client(base_url=server.url, timeout=30)
        job_id = _slow_job(client, tmp_path)
        running = _wait_until_running(client, job_id, min_progress=0.15)
        pid = int(running["worker"].rsplit(":", 1)[1])
        processes = server.descendants()
        assert pid in processes
        if target == "pool process":
            os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(processes[pid][1], signal.SIGKILL)  # the worker's process group

        job = wait_job(client, job_id, timeout_s=300)
        versions = assert_ready_versions_are_intact(client, "wide")
        statuses = {v["version"]: v["status"] for v in versions}
        assert statuses[2] == "failed", versions  # the killed attempt's version
        assert job["status"] in {"succeeded", "failed"}
        if job["status"] == "succeeded":
            assert job["attempts"] >= 2
            assert statuses[job["result"]["version"]] == "ready"
            assert job["result"]["version"] > 2
        assert all(status != "pending" for status in statuses.values())


def test_cancel_a_running_job(data_dir: Path, tmp_path: Path):
    with live_server(data_dir) as server:
        client = httpx.Client(base_url=server.url, timeout=30)
        job_id = _slow_job(client, tmp_path)
        _wait_until_running(client, job_id, min_progress=0.12)
        cancelled = client.delete(f"/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            versions = client.get("/models/wide/versions").json()
            if [v["status"] for v in versions] == ["ready", "failed"]:
                break
            time.sleep(0.2)
        assert [v["status"] for v in versions] == ["ready", "failed"]
        assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_sigterm_stops_every_child(data_dir: Path):
    server = LiveServer(data_dir)
    server.start()
    processes = server.descendants()
    commands = " | ".join(cmd for cmd, _ in processes.values())
    assert "redis-server" in commands and " worker" in commands and " api" in commands
    assert len(processes) >= 4  # redis, worker + its pool process, api
    sessions = {sid for _, sid in processes.values()}
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    deadline = time.monotonic() + 10
    while processes_in_sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in_sessions(sessions) == []
