from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import export_tiny_onnx, private_redis

from common.settings import Settings
from model_store import Store, open_store


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    with private_redis() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, broker_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", redis_url=broker_url, ort_threads=1)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings.effective_database_url, settings.resolved_data_dir)
    yield opened
    opened.close()


@pytest.fixture
def stored_tiny(store: Store, tmp_path: Path) -> int:
    """Version 1 of model ``tiny``: a real torch conv net exported to ONNX."""
    path = export_tiny_onnx(tmp_path / "tiny.onnx")
    pending = store.models.create_pending_version("tiny", format="onnx")
    return store.models.finalize_version("tiny", pending.number, {"model": path}).number
