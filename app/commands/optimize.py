"""``posecompress optimize NAME:VERSION --dataset ID (--max-ap-loss X | --min-oks X)``: start
an optimize job on a running server, show its progress, then print its Pareto table."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.compress import add_server_arguments, api_client, start_and_follow
from common.params import OptimizeOptions
from common.settings import Settings

COLUMNS = (
    "name",
    "version",
    "latency_ratio",
    "size_ratio",
    "oks_vs_parent",
    "mean_px",
    "ap",
    "meets_target",
    "pareto",
    "recommended",
    "note",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "optimize", help="search compression candidates within a time budget (Pareto table)"
    )
    parser.add_argument(
        "model", help="NAME:VERSION (or NAME:alias; NAME alone = its default version)"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="training / calibration dataset id (repeat it to combine datasets)",
    )
    parser.add_argument("--eval-dataset", help="labelled dataset id (needed by --max-ap-loss)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--max-ap-loss", type=float, help="AP loss allowed on --eval-dataset")
    target.add_argument("--min-oks", type=float, help="mean OKS vs the parent, held-out crops")
    parser.add_argument("--objective", choices=("latency", "size"), default="latency")
    default_budget = OptimizeOptions.model_fields["time_budget_s"].default
    parser.add_argument("--time-budget-s", type=float, default=default_budget)
    add_server_arguments(parser)
    parser.set_defaults(handler=run)


def pareto_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The parent and every candidate as printable rows."""
    rows = [{**table["parent"], "note": "parent"}]
    for row in table["candidates"]:
        rows.append({**row, "note": row.get("skipped") or row.get("error") or ""})
    return rows


def run(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from app.report_table import format_table
    from model_store.records import DEFAULT

    logging.getLogger("httpx").setLevel(logging.WARNING)
    name, _, ref = args.model.partition(":")
    body = {
        "dataset": args.dataset[0] if len(args.dataset) == 1 else args.dataset,
        "eval_dataset": args.eval_dataset,
        "max_ap_loss": args.max_ap_loss,
        "min_oks_vs_parent": args.min_oks,
        "objective": args.objective,
        "time_budget_s": args.time_budget_s,
    }
    client = api_client(args, settings)
    job = start_and_follow(client, f"/models/{name}/versions/{ref or DEFAULT}/optimize", body)
    if isinstance(job, int):
        return job
    table = client.get(f"/models/{name}/compare", params={"job": job["id"]}).json()["pareto"]
    print(f"{name}: {job['message']} (objective {table['objective']}, target {table['target']})")
    print(format_table(pareto_rows(table), list(COLUMNS)))
    return 0
