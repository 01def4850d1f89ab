"""API tests: the real app (TestClient) on SQLite with a private real Redis broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import export_tiny_onnx, private_redis

from app.main import create_app
from common.settings import Settings


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    with private_redis() as url:
        yield url


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
