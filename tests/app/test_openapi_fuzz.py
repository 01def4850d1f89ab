"""A bounded schemathesis run over the OpenAPI spec, in process: no answer >= 500 and no status
code the spec does not document. The long run is ``bench/fuzz_api.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from app.main import create_app
from common.settings import Settings

#: Per operation; with ~30 operations the whole run stays well under two minutes.
EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[FastAPI]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    app = create_app(Settings(data_dir=data_dir, redis_url=broker_url, max_upload_bytes=4_000_000))
    with TestClient(app):  # runs the lifespan: store and broker
        yield app


def test_no_server_error_and_only_documented_codes(fuzzed_app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    failures: dict[str, str] = {}
    operations = requests = 0
    for loaded in schema.get_all_operations():
        operation = loaded.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal requests
            requests += 1
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance])

        try:
            check()
        except Exception as exc:  # every operation runs; the failures are listed together
            failures[operation.label] = str(exc)[:2000]
    assert operations >= 25 and requests >= 10 * operations
    assert failures == {}
