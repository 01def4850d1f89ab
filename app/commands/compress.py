"""``posecompress compress NAME:VERSION --recipe FILE --dataset ID``: start a compression job
on a running server, show its progress, then print the new version and its report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common.settings import Settings

TERMINAL = {"succeeded", "failed", "cancelled"}
SUMMARY = (
    "artifact_bytes",
    "params",
    "macs",
    "latency_ms.p50",
    "latency_ratio",
    "fidelity.mean_landmark_px",
    "fidelity.mean_oks_vs_parent",
    "fidelity.n_crops",
    "fidelity.held_out",
    "accuracy.ap",
    "accuracy.ap_ci",
    "parent_accuracy.ap",
    "budget.within_budget",
    "training_steps",
    "parent_accuracy.ap_ci",
    "wall_time_s",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compress", help="compress a stored version on a running server (progress bar)"
    )
    parser.add_argument(
        "model", help="NAME:VERSION (or NAME:alias; NAME alone = its default version)"
    )
    parser.add_argument(
        "--recipe", required=True, type=Path, help='JSON file: [{"method": ...}, ...]'
    )
    parser.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="training / calibration dataset id (repeat it to combine datasets)",
    )
    parser.add_argument("--eval-dataset", help="labelled dataset id for AP / PCK")
    parser.add_argument("--keep-intermediate", action="store_true", help="a version per step")
    parser.add_argument(
        "--promote", action="store_true", help="move alias 'default' to it if within budget"
    )
    add_server_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.set_defaults(handler=run)


def load_recipe(path: Path) -> list[dict[str, Any]]:
    """A recipe file: a JSON list of steps, or an object with a ``recipe`` list."""
    data = json.loads(path.read_text(encoding="utf-8"))
    steps = data.get("recipe") if isinstance(data, dict) else data
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise ValueError(f"{path}: expected a JSON list of steps or {{'recipe': [...]}}")
    return steps


def progress_bar(fraction: float, message: str, width: int = 30) -> str:
    filled = round(max(0.0, min(fraction, 1.0)) * width)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% {message[:60]:<60}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from app.report_table import flatten, format_table, with_intervals
    from model_store.records import DEFAULT

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would break the bar

    name, _, ref = args.model.partition(":")
    try:
        recipe = load_recipe(args.recipe)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    body = {
        "recipe": recipe,
        "dataset": args.dataset[0] if len(args.dataset) == 1 else args.dataset,
        "eval_dataset": args.eval_dataset,
        "keep_intermediate": args.keep_intermediate,
        "promote": args.promote,
    }
    client = api_client(args, settings)
    job = start_and_follow(client, f"/models/{name}/versions/{ref or DEFAULT}/compress", body)
    if isinstance(job, int):
        return job
    result = job["result"]
    version = client.get(f"/models/{result['model']}/versions/{result['version']}").json()
    print(f"{result['model']}:{result['version']} (parent v{version['parent']}) {job['message']}")
    report = version.get("report") or {}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        flat = with_intervals(flatten(report))
        print(format_table([{k: flat.get(k) for k in SUMMARY}], list(SUMMARY)))
    return 0


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--api-key`` of the commands that talk to a running server."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server [%(default)s]")
    parser.add_argument("--api-key", help="X-API-Key (or POSECOMPRESS_API_KEY)")


def api_client(args: argparse.Namespace, settings: Settings) -> Any:
    """An httpx client for ``--url`` that sends ``--api-key`` (or the API_KEY setting)."""
    import httpx

    key = args.api_key or settings.api_key
    return httpx.Client(base_url=args.url, timeout=60, headers={"X-API-Key": key} if key else {})


def start_and_follow(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any] | int:
    """POST a job request and follow the job: the succeeded job, or the exit code (1 refused
    or failed, 130 cancelled by Ctrl-C) after saying why on stderr."""
    response = client.post(path, json=body)
    if response.status_code != 202:
        print(f"error {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    job = follow_job(client, response.json()["job_id"])
    if job is None:
        return 130
    if job["status"] != "succeeded":
        print(f"job {job['status']}: {job.get('error') or job['message']}", file=sys.stderr)
        return 1
    return job


def follow_job(client: Any, job_id: str) -> dict[str, Any] | None:
    """Follow a job to its end (progress bar on stderr); ``None`` when Ctrl-C cancelled it."""
    print(f"job {job_id}", file=sys.stderr)
    try:
        return _follow(client, job_id)
    except KeyboardInterrupt:
        client.delete(f"/jobs/{job_id}")
        print(f"\ncancelled job {job_id}", file=sys.stderr)
        return None


def _follow(client: Any, job_id: str) -> dict[str, Any]:
    """Poll the job until it ends, drawing a progress bar on stderr."""
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        sys.stderr.write(progress_bar(float(job["progress"]), f"{job['status']}: {job['message']}"))
        sys.stderr.flush()
        if job["status"] in TERMINAL:
            sys.stderr.write("\n")
            return job
        time.sleep(0.5)
