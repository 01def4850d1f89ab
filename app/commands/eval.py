"""``posecompress eval --dataset DIR --model NAME[:VERSION]``: COCO AP / PCK of a stored
version on a labelled dataset, run locally (no server) through the serving pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.commands.common import add_data_dir
from common.settings import Settings

#: ``ap_ci``: the 95% bootstrap interval of AP (over people in gt-boxes mode, images in detector)
SUMMARY = (
    "mode",
    "n_images",
    "n_people",
    "ap",
    "ap_ci",
    "ap50",
    "ap75",
    "ar",
    "pck",
    "mean_error_px",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a stored version on a labelled COCO-keypoints dataset"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="dataset directory (annotations.json + images/) or a stored dataset id",
    )
    parser.add_argument("--model", required=True, help="NAME[:VERSION or alias] [default]")
    parser.add_argument(
        "--mode",
        choices=["gt_boxes", "gt-boxes", "detector"],
        default="gt_boxes",
        help="ground-truth person boxes (top-down) or the model's own detector [gt_boxes]",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument(
        "--attach", action="store_true", help="also store the report on the version"
    )
    add_data_dir(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from app.report_table import flatten, format_table, with_intervals
    from model_store import NotFoundError, open_store
    from workers.runtime import JobError
    from workers.tasks.evaluate import attach_evaluation, evaluate_version
    from workers.version_pipeline import parse_model_ref

    mode = "gt-boxes" if args.mode in ("gt_boxes", "gt-boxes") else "detector"
    store = open_store(settings.effective_database_url, settings.resolved_data_dir)
    try:
        name, ref = parse_model_ref(args.model)
        version = store.models.resolve(name, ref)
        dataset_dir, dataset_key = Path(args.dataset), str(Path(args.dataset).resolve())
        if not dataset_dir.is_dir():
            dataset_dir, dataset_key = store.datasets.path(args.dataset), args.dataset
        report = evaluate_version(store, version, dataset_dir, mode, settings.ort_threads)
        if args.attach:
            attach_evaluation(store, version, dataset_key, mode, report)
    except (NotFoundError, JobError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        cells = with_intervals(flatten(report))
        row = {"model": f"{name}:{version.number}", **{k: cells.get(k) for k in SUMMARY}}
        print(format_table([row], list(row)))
    return 0
