"""Every method's default request on ``blazepose-full`` v1, through the HTTP API, as a new user
would run it: the unlabeled photos as the training dataset, the labelled dev photos only as
the eval dataset (never trained or calibrated on).

Example (starts ``posecompress serve`` on a temporary data dir unless ``--url`` is given)::

    python bench/api_defaults.py --recipes fp16,int8,prune,lowrank --optimize-ap-loss 0.02

Prints one row per recipe: the job's outcome and budget verdict, fidelity to v1 on the
held-out crops, dev AP (with its confidence interval when the report has one), the latency
ratio to v1, the version ``/predict`` serves without a version afterwards and the job's wall
time; with ``--optimize-ap-loss``, then the Pareto table of an ``optimize`` job with that AP-loss
target on the dev photos (default 30 min time budget).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
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

logger = logging.getLogger("api_defaults")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MODEL = "blazepose-full"
#: each method's default request: no knobs but the method (and the mode of fp16)
RECIPES: dict[str, list[dict[str, Any]]] = {
    "fp16": [{"method": "quantize", "mode": "fp16_weights"}],
    "int8": [{"method": "quantize"}],
    "prune": [{"method": "prune"}],
    "lowrank": [{"method": "lowrank"}],
    # not a default: INT8 with the quantization-aware fine-tuning the README suggests
    "int8_qat": [{"method": "quantize", "qat_steps": 300}],
}


def dataset_zip(folder: Path) -> bytes:
    """``folder/images/*`` (and ``annotations.json`` when present) as a dataset zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if (folder / "annotations.json").exists():
            archive.write(folder / "annotations.json", "annotations.json")
        for image in sorted((folder / "images").iterdir()):
            archive.write(image, f"images/{image.name}")
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(url: str | None) -> Iterator[str]:
    """``url``, or a fresh ``posecompress serve`` (stopped on exit) with the built-in model."""
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="pc-bench-") as tmp:
        port = _free_port()
        log = Path(tmp) / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--data-dir", f"{tmp}/data",
                 "--port", str(port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "POSECOMPRESS_LOG_LEVEL": "INFO"},
            )  # fmt: skip
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                process.terminate()
                process.wait(timeout=60)
                logger.info("server log: %s lines", len(log.read_text().splitlines()))


def wait_for_model(client: httpx.Client, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/models/{MODEL}/versions/1")
            if response.status_code == 200 and response.json()["status"] == "ready":
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{MODEL} v1 was not ready after {timeout_s} s")


def upload(client: httpx.Client, folder: Path) -> str:
    response = client.post("/datasets", files={"file": (f"{folder.name}.zip", dataset_zip(folder))})
    response.raise_for_status()
    return str(response.json()["id"])


def run_recipe(
    client: httpx.Client, name: str, train: str, dev: str, timeout_s: float
) -> dict[str, Any]:
    body = {"recipe": RECIPES[name], "dataset": train, "eval_dataset": dev}
    started = time.monotonic()
    response = client.post(f"/models/{MODEL}/versions/1/compress", json=body)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            break
        if time.monotonic() - started > timeout_s:
            client.delete(f"/jobs/{job_id}")
            return {"recipe": name, "verdict": f"cancelled after {timeout_s:.0f} s"}
        time.sleep(5)
    row: dict[str, Any] = {"recipe": name, "wall_s": round(time.monotonic() - started)}
    # what a /predict without a version would serve now
    row["default_serves"] = client.get(f"/models/{MODEL}").json()["default"]
    if job["status"] != "succeeded":
        row["verdict"] = f"job {job['status']}: {job['error']}"
        return row
    report = client.get(f"/models/{MODEL}/versions/{job['result']['version']}/report").json()
    fidelity, accuracy = report["fidelity"], report.get("accuracy") or {}
    ci = accuracy.get("ap_ci")
    row.update(
        version=job["result"]["version"],
        verdict="within budget" if report["budget"]["within_budget"] else "kept, over budget",
        mean_px=round(fidelity["mean_landmark_px"], 2),
        oks=round(fidelity["mean_oks_vs_parent"], 3),
        held_out=fidelity["n_crops"],
        dev_ap=round(accuracy["ap"], 3) if accuracy else None,
        dev_ap_ci=[round(ci["low"], 3), round(ci["high"], 3)] if ci else None,
        parent_ap=round((report.get("parent_accuracy") or {}).get("ap", float("nan")), 3),
        latency_ratio=round(report["latency_ratio"], 3),
        training_steps=report.get("training_steps"),
    )
    return row


def run_optimize(
    client: httpx.Client, train: str, dev: str, max_ap_loss: float, time_budget_s: float
) -> dict[str, Any]:
    """An ``optimize`` job on v1 with the AP-loss target; its Pareto table and wall time."""
    body = {"dataset": train, "eval_dataset": dev, "max_ap_loss": max_ap_loss,
            "time_budget_s": time_budget_s}  # fmt: skip
    started = time.monotonic()
    response = client.post(f"/models/{MODEL}/versions/1/optimize", json=body)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in {
        "succeeded", "failed", "cancelled"
    }:  # fmt: skip
        time.sleep(10)
    wall_s = round(time.monotonic() - started)
    if job["status"] != "succeeded":
        return {"status": job["status"], "error": job["error"], "wall_s": wall_s}
    table = client.get(f"/models/{MODEL}/compare", params={"job": job_id}).json()["pareto"]
    return {"status": "succeeded", "message": job["message"], "wall_s": wall_s, "table": table}


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument(
        "--recipes", default="fp16,int8,prune,lowrank", help=f"of {sorted(RECIPES)} [%(default)s]"
    )
    parser.add_argument("--train", type=Path, default=SHARED / "unlabeled")
    parser.add_argument("--dev", type=Path, default=SHARED / "dev")
    parser.add_argument("--timeout-s", type=float, default=3 * 3600, help="per recipe")
    parser.add_argument("--optimize-ap-loss", type=float, help="then optimize with this target")
    parser.add_argument("--optimize-time-budget-s", type=float, default=1800.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {sorted(RECIPES)}")
    rows = []
    with served(args.url) as url:
        client = httpx.Client(base_url=url, timeout=120)
        wait_for_model(client)
        train, dev = upload(client, args.train), upload(client, args.dev)
        for name in names:
            logger.info("running %s", name)
            rows.append(run_recipe(client, name, train, dev, args.timeout_s))
            logger.info("%s", rows[-1])
        optimized = None
        if args.optimize_ap_loss is not None:
            logger.info("running optimize (max_ap_loss %s)", args.optimize_ap_loss)
            optimized = run_optimize(
                client, train, dev, args.optimize_ap_loss, args.optimize_time_budget_s
            )
    columns = ["recipe", "verdict", "mean_px", "oks", "held_out", "dev_ap", "dev_ap_ci",
               "parent_ap", "latency_ratio", "training_steps", "default_serves",
               "wall_s"]  # fmt: skip
    print_table(rows, columns)
    if optimized is not None:
        print(f"\noptimize: {optimized['status']} in {optimized['wall_s']} s: "
              f"{optimized.get('message') or optimized.get('error')}")  # fmt: skip
        if "table" in optimized:
            table = optimized["table"]
            candidates = [{**table["parent"], "name": "parent"}, *table["candidates"]]
            for row in candidates:
                row["note"] = row.get("skipped") or row.get("error") or ""
            print_table(candidates, ["name", "version", "latency_ratio", "size_ratio",
                                     "oks_vs_parent", "mean_px", "ap", "meets_target",
                                     "pareto", "recommended", "wall_time_s", "note"])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
