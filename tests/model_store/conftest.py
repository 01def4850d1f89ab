"""Store fixtures: the same tests run on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model_store import Store, open_store

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_schema_factory() -> Iterator[Callable[[], str]]:
    """Makes URLs whose search_path is a fresh PostgreSQL schema; drops them all at the end.

    Skips (never fails) when PostgreSQL is not reachable."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(PG_URL)
    schemas: list[str] = []

    def make() -> str:
        schema = f"pc_test_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        schemas.append(schema)
        return f"{PG_URL}?options=-csearch_path%3D{schema}"

    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} not usable: {exc}")
    yield make
    with admin.begin() as conn:
        for schema in schemas:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_schema_factory")
    return factory()


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(database_url, tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def artifact_file(tmp_path: Path) -> Callable[[bytes], Path]:
    counter = iter(range(10_000))

    def make(content: bytes) -> Path:
        path = tmp_path / f"artifact-{next(counter)}.bin"
        path.write_bytes(content)
        return path

    return make
