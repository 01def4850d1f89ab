"""The same ``serve`` code path against this machine's Redis (127.0.0.1:6379) and
PostgreSQL (127.0.0.1:5432) instead of the embedded ones. Skipped when unreachable."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from service_support import (
    assert_ready_versions_are_intact,
    export_tiny_onnx,
    live_server,
    remove,
    short_tmp_dir,
    upload_model,
    wait_job,
)

pytestmark = pytest.mark.slow

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_DB = 13


def _require(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        pytest.skip(f"{what} not reachable at {host}:{port}")


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    _require("127.0.0.1", 5432, "PostgreSQL")
    from sqlalchemy import create_engine, text

    schema = f"pc_e2e_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    _require("127.0.0.1", 6379, "Redis")
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    ours = ["posecompress", "unacked", "unacked_index", "unacked_mutex"]
    client.delete(*ours)
    yield url
    client.delete(*ours)


def test_serve_with_external_redis_and_postgresql(
    pg_schema_url: str, redis_url: str, tmp_path: Path
):
    folder = short_tmp_dir("pc-ext-")
    env = {"POSECOMPRESS_DATABASE_URL": pg_schema_url, "POSECOMPRESS_REDIS_URL": redis_url}
    try:
        with live_server(folder / "data", env=env) as server:
            commands = " ".join(cmd for cmd, _ in server.descendants().values())
            assert "redis-server" not in commands  # no embedded Redis
            assert not (folder / "data" / "metadata.sqlite3").exists()
            client = httpx.Client(base_url=server.url, timeout=30)
            upload_model(client, export_tiny_onnx(tmp_path / "tiny.onnx"), "tiny")
            started = client.post("/models/tiny/versions/1/export", json={"verify_samples": 4})
            job = wait_job(client, started.json()["job_id"])
            assert job["status"] == "succeeded", job
            assert_ready_versions_are_intact(client, "tiny")
    finally:
        remove(folder)
