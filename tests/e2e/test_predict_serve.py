"""``posecompress serve`` on a fresh data dir imports the built-in model in the background
(the API is ready at once; /predict says the model is being imported), then serves real
keypoints; a restart on the same data does not import again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_support import (
    TEST_DATA,
    LiveServer,
    cli_env,
    live_server,
    remove,
    run_cli,
    short_tmp_dir,
)

pytestmark = pytest.mark.slow

IMPORT_TIMEOUT_S = 600


@pytest.fixture
def data_dir() -> Iterator[Path]:
    folder = short_tmp_dir("pc-predict-")
    yield folder / "data"
    remove(folder)


def _predict(client: httpx.Client, name: str) -> httpx.Response:
    content = (TEST_DATA / name).read_bytes()
    return client.post("/predict", files={"image": (name, content, "image/jpeg")})


def _wait_for_builtin(client: httpx.Client, server: LiveServer) -> tuple[float, set[str]]:
    """Seconds until /predict answers 200, and the error codes seen meanwhile."""
    started, seen = time.monotonic(), set()
    response = None
    while time.monotonic() - started < IMPORT_TIMEOUT_S:
        response = _predict(client, "ultralytics_zidane.jpg")
        if response.status_code == 200:
            return time.monotonic() - started, seen
        assert response.status_code in (404, 503), response.text
        seen.add(response.json()["error"]["code"])
        time.sleep(1.0)
    status = server.data_dir / "assets" / "import-default.json"
    raise TimeoutError(
        f"the built-in model was not imported in time; last answer "
        f"{response.text if response is not None else None}; status "
        f"{status.read_text() if status.exists() else None}; log:\n{server.log.read_text()[-3000:]}"
    )


def test_first_start_imports_blazepose_and_serves_keypoints(
    data_dir: Path, blazepose_assets
) -> None:
    env = {
        "POSECOMPRESS_ASSET_DIR": str(blazepose_assets.landmark_tflite.parent),
        "POSECOMPRESS_IMPORT_DEFAULT": "true",  # LiveServer turns it off by default
    }
    with live_server(data_dir, env=env) as server:
        client = httpx.Client(base_url=server.url, timeout=120)
        waited, seen = _wait_for_builtin(client, server)
        assert seen <= {"not_found", "model_importing"}
        status = json.loads((data_dir / "assets" / "import-default.json").read_text())
        assert status["state"] == "done"
        print(
            f"\nserve -> /ready {server.ready_after_s:.1f} s; built-in model served "
            f"{waited:.1f} s after ready (import {status['seconds']:.1f} s)"
        )
        for name, people in (("ultralytics_bus.jpg", 2), ("ultralytics_zidane.jpg", 2)):
            _predict(client, name)  # warm the sessions
            response = _predict(client, name)
            assert response.status_code == 200, response.text
            assert len(response.json()["people"]) == people
            timing = response.headers["server-timing"]
            assert all(f"{stage};dur=" in timing for stage in ("decode", "detect", "landmarks"))
            print(f"{name}: {people} people, Server-Timing: {timing}")
        versions = client.get("/models/blazepose-full/versions").json()
        assert [v["version"] for v in versions] == [1]
        roles = {a["role"] for a in versions[0]["artifacts"]}
        assert roles == {"model", "detector", "recipe", "weights"}

    with live_server(data_dir, env=env) as again:
        client = httpx.Client(base_url=again.url, timeout=120)
        assert _predict(client, "ultralytics_zidane.jpg").status_code == 200  # no re-import
        assert len(client.get("/models/blazepose-full/versions").json()) == 1


def test_import_default_command_is_idempotent(data_dir: Path, blazepose_assets) -> None:
    env = cli_env(POSECOMPRESS_ASSET_DIR=str(blazepose_assets.landmark_tflite.parent))
    command = ("models", "import-default", "--data-dir", str(data_dir))
    first = run_cli(*command, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("stored blazepose-full v1")
    second = run_cli(*command, env=env, timeout=120)
    assert second.returncode == 0 and second.stdout.startswith("already present: blazepose-full v1")


def test_import_default_without_the_wheel_fails_clearly(tmp_path: Path) -> None:
    env = cli_env(
        POSECOMPRESS_ASSET_DIR=str(tmp_path / "no-assets"),
        PIP_NO_INDEX="1",  # no download either
        PIP_FIND_LINKS=str(tmp_path),
    )
    result = run_cli(
        "models", "import-default", "--data-dir", str(tmp_path / "data"), env=env, timeout=300
    )
    assert result.returncode == 2
    assert "BlazePose model files are unavailable" in result.stderr
