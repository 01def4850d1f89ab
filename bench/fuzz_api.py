"""A bounded schemathesis run over the OpenAPI spec of a live ``posecompress serve``: every
answer must be < 500 and documented in the spec.

Example (starts its own server on a temp data dir, ~2 x 5 minutes)::

    python bench/fuzz_api.py --max-examples 30 --max-time 300

Two passes: one with generated path parameters (mostly unknown names: 404 paths), one with
them pinned to a stored model ``tiny`` (v1, alias ``prod``) and a stored dataset (DELETEs left
out), so the operations reach their validation and domain logic. ``--url`` fuzzes a running
server instead (nothing is stored first). Prints the request and failure counts of each pass;
exits non-zero when schemathesis found a failure.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
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

import httpx

logger = logging.getLogger("fuzz_api")
REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKS = "not_a_server_error,status_code_conformance"
_COUNTS = re.compile(r"(\d+) generated, (?:(\d+) passed|(\d+) found (\d+) unique failures?)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(data_dir: Path) -> Iterator[str]:
    """``posecompress serve`` on a free port (built-in import off); its base URL."""
    port = _free_port()
    env = {**os.environ, "POSECOMPRESS_IMPORT_DEFAULT": "false"}
    log = (data_dir.parent / "serve.log").open("wb")
    command = ["serve", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *command],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not get ready; see {log.name}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _relu_onnx() -> bytes:
    from onnx import TensorProto, helper

    shape = [1, 3, 64, 64]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def _dataset_zip() -> bytes:
    from PIL import Image

    from pose_core.keypoints import COCO17_NAMES

    image = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image, format="JPEG")
    annotations = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 24}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "keypoints": [v for k in range(17) for v in (float(k), float(k), 2)],
                "bbox": [0, 0, 32, 24],
            }
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17_NAMES)}],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/a.jpg", image.getvalue())
        archive.writestr("annotations.json", json.dumps(annotations))
    return buffer.getvalue()


def store_fixtures(url: str) -> dict[str, str]:
    """A model ``tiny`` (v1, alias ``prod``) and a dataset; the path parameters naming them."""
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post(
            "/models", data={"name": "tiny"}, files={"file": ("tiny.onnx", _relu_onnx())}
        ).raise_for_status()
        client.put("/models/tiny/aliases/prod", json={"version": 1}).raise_for_status()
        dataset = client.post("/datasets", files={"file": ("d.zip", _dataset_zip())})
        dataset.raise_for_status()
    return {"name": "tiny", "ref": "1", "alias": "prod", "dataset_id": dataset.json()["id"]}


def fuzz(url: str, args: argparse.Namespace, parameters: dict[str, str], log: Path) -> int:
    """One schemathesis pass; its output goes to ``log``. Returns its exit code. With
    ``parameters`` (pinned path parameters) DELETEs are left out, so what they name stays."""
    command = ["schemathesis"]
    extra = []
    if parameters:
        config = log.with_suffix(".toml")
        config.write_text(
            "[parameters]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in parameters.items())
        )
        command += ["--config-file", str(config)]
        extra = ["--exclude-method", "DELETE"]
    command += [
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(args.max_examples),
        "--max-time",
        str(args.max_time),
        "--seed",
        str(args.seed),
        "--workers",
        "1",  # Python 3.11's compile() is not thread-safe under hypothesis' lambda parsing
        *extra,
    ]
    logger.info("+ %s", " ".join(command))
    with log.open("wb") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    text = log.read_text(errors="replace")
    match = _COUNTS.search(text)
    if match is None:
        logger.error("no summary in %s", log)
        return code.returncode or 1
    generated = int(match.group(1))
    failures = 0 if match.group(2) else int(match.group(4))
    logger.info("%s: %d requests, %d unique failures (log %s)", log.stem, generated, failures, log)
    for line in text.splitlines():
        if re.match(r"\s+[❌🚫]", line):
            logger.info("  %s", line.strip())
    return code.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="fuzz this running server (nothing is stored first)")
    parser.add_argument("--max-examples", type=int, default=30, help="per operation and phase")
    parser.add_argument("--max-time", type=int, default=300, help="seconds per pass")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="folder for the logs [a temp folder]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="fuzz-api-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.url:
        return fuzz(args.url, args, {}, out / "generated.log")
    with served(out / "data") as url:
        codes = [fuzz(url, args, {}, out / "generated.log")]
        codes.append(fuzz(url, args, store_fixtures(url), out / "stored.log"))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
