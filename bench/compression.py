"""Compression targets of issue 4 on the real BlazePose-Full landmark model.

Trains label-free (teacher = the fp32 parent; ground truth is never mixed in) on augmented crops
of ``--train-on``: by default only ``--unlabeled`` (detector crops), so the dev people that AP is
measured on are held out of refit, guard, calibration and distillation crops alike
(``--train-on dev,unlabeled`` adds dev ground-truth-box crops: transductive, optimistic). Then
measures every candidate against the fp32 ONNX Runtime base: params, MACs, latency (interleaved,
batch 1, 2 threads), file size, dev AP in ground-truth-box mode, fidelity, and wall time.

    python bench/compression.py --recipes prune30,lowrank,chain --recovery-s 300
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose_core.assets import ensure_blazepose_assets
from pose_core.compression.base import CompressionResult, OnnxModel
from pose_core.compression.configs import RecoveryConfig
from pose_core.compression.crops import build_cropset
from pose_core.compression.data import AugmentConfig, CompressionData, CropSet
from pose_core.compression.measure import measure_candidate, onnx_bytes_of
from pose_core.compression.pipeline import run_recipe
from pose_core.importers.tflite import import_blazepose_detector, import_blazepose_landmark
from pose_core.inference.crop import CropRect

logger = logging.getLogger("bench.compression")


def recipes(recovery: dict[str, Any], qat_steps: int) -> dict[str, list[dict[str, Any]]]:
    quantize = {"method": "quantize", "mode": "int8_static"}
    quantize_qat = {
        "method": "quantize",
        "mode": "int8_static",
        "budget": {"max_mean_px": None},
        "num_calibration_crops": 128,
        "qat_steps": qat_steps,
        "qat_learning_rate": recovery["qat_lr"],
    }
    recovery = {k: v for k, v in recovery.items() if k != "qat_lr"}
    return {
        "prune30": [{"method": "prune", "ratio": 0.3, "recovery": recovery}],
        "prune_macs68": [
            {"method": "prune", "ratio": None, "target_macs_ratio": 0.68, "recovery": recovery}
        ],
        "lowrank": [{"method": "lowrank", "params_ratio": 0.68, "recovery": recovery}],
        "chain": [
            {"method": "prune", "ratio": None, "target_macs_ratio": 0.68, "recovery": recovery},
            {"method": "distill", **recovery},
            quantize_qat,
        ],
        "int8": [quantize],
        "int8_qat": [quantize_qat],
    }


def detector_fn(detector_tflite: Path) -> Callable[[np.ndarray], list[CropRect]]:
    from pose_core.inference.pipeline import PosePipeline
    from pose_core.inference.runtime import OnnxRunner

    example = torch.zeros(1, 3, 224, 224)
    runner = OnnxRunner(
        onnx_bytes_of(import_blazepose_detector(detector_tflite), example), threads=2
    )
    pipeline = PosePipeline(landmark=None, detector=runner)  # type: ignore[arg-type]
    return lambda image: pipeline.detect_rois(image, max_people=4)


def train_crops(args: argparse.Namespace, detector_tflite: Path) -> CropSet:
    augment = AugmentConfig(copies=args.copies)
    named = {"dev": args.dev, "unlabeled": args.unlabeled}
    dirs = [named[name] for name in args.train_on.split(",")]
    detect = None if args.no_detector else detector_fn(detector_tflite)
    return build_cropset(dirs, augment=augment, seed=args.seed, detect=detect)


def table_row(name: str, rep: dict[str, Any], base: dict[str, Any], wall: float) -> str:
    ap = rep["accuracy"]["ap"] if rep["accuracy"] else float("nan")
    base_ap = rep["parent_accuracy"]["ap"] if rep["parent_accuracy"] else float("nan")
    return (
        f"| {name} | {rep['params'] / base['params']:.2f}x | {rep['macs'] / base['macs']:.2f}x "
        f"| {rep['latency_ratio']:.2f}x ({rep['latency_ms']['p50']:.2f} / "
        f"{rep['parent_latency_ms']['p50']:.2f} ms) "
        f"| {rep['artifact_bytes'] / rep['parent_artifact_bytes']:.2f}x | {ap:.3f} "
        f"| {base_ap - ap:+.3f} "
        f"| {rep['fidelity']['mean_landmark_px']:.1f} | {wall:.0f} s |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=Path("/work/shared/data/dev"))
    parser.add_argument("--unlabeled", type=Path, default=Path("/work/shared/data/unlabeled"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--work-dir", type=Path, default=Path(".cache/bench_compression"))
    parser.add_argument("--recipes", default="prune30,lowrank,chain")
    parser.add_argument(
        "--recovery-s", type=float, default=300.0, help="time budget of each recovery"
    )
    parser.add_argument("--recovery-steps", type=int, default=100000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--lr", type=float, default=RecoveryConfig().lr, help="distillation lr (RecoveryConfig.lr)"
    )
    parser.add_argument(
        "--train-on",
        default="unlabeled",
        choices=["unlabeled", "dev,unlabeled", "dev"],
        help="crops that refit, guard, calibration and distillation see (dev = in-sample)",
    )
    parser.add_argument("--qat-steps", type=int, default=400)
    parser.add_argument("--qat-lr", type=float, default=1e-5)
    parser.add_argument("--copies", type=int, default=2, help="augmented copies per source crop")
    parser.add_argument(
        "--no-detector", action="store_true", help="whole-image crops for unlabeled"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--show-intermediate",
        action="store_true",
        help="also measure a chain's intermediate versions",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the reports here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    assets = ensure_blazepose_assets(args.cache_dir, allow_download=False)
    parent = import_blazepose_landmark(assets.landmark_tflite)
    t0 = time.monotonic()
    train = train_crops(args, assets.detector_tflite)
    eval_crops = build_cropset([args.dev], seed=args.seed)
    logger.info(
        "%d train crops, %d eval crops (%.0f s)", len(train), len(eval_crops), time.monotonic() - t0
    )
    base_stats = measure_candidate(parent, parent, eval_crops, latency_rounds=5)
    base = {"params": base_stats["params"], "macs": base_stats["macs"]}
    recovery = {
        "steps": args.recovery_steps,
        "time_budget_s": args.recovery_s,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "checkpoint_every": 50,
        "qat_lr": args.qat_lr,
    }
    all_recipes = recipes(recovery, args.qat_steps)
    rows: list[str] = []
    reports: dict[str, dict[str, Any]] = {}
    for name in args.recipes.split(","):
        start = time.monotonic()
        data = CompressionData(
            train=train,
            work_dir=args.work_dir / name,
            eval_dataset_dir=args.dev,
            progress=lambda f, m: logger.debug("%.2f %s", f, m),
            seed=args.seed,
        )
        results: list[CompressionResult] = run_recipe(
            parent, all_recipes[name], data, keep_intermediate=True
        )
        wall = time.monotonic() - start
        reports[name] = {"steps": [r.report for r in results]}
        shown = results if args.show_intermediate else results[-1:]
        for result in shown:
            index = results.index(result)
            label = (
                name if index == len(results) - 1 else f"{name}[{index}:{result.report['method']}]"
            )
            source = next(
                (
                    r.model
                    for r in reversed(results[: index + 1])
                    if not isinstance(r.model, OnnxModel)
                ),
                parent,
            )
            rep = measure_candidate(
                result.model,
                parent,
                eval_crops,
                eval_dataset_dir=args.dev,
                source_torch=source if isinstance(result.model, OnnxModel) else None,
                wall_time_s=wall,
            )
            reports[name][label] = rep
            rows.append(table_row(label, rep, base, wall))
            print(rows[-1], flush=True)
    print(
        f"\nrecovery budget {args.recovery_s:.0f} s per distillation, batch {args.batch_size}, "
        f"lr {args.lr}, {len(train)} train crops ({args.train_on}), QAT {args.qat_steps} steps "
        f"at lr {args.qat_lr}, threads {args.threads}"
    )
    print(
        "| recipe | params | MACs | latency p50 (cand / fp32 ORT) | file | dev AP | AP loss "
        "| px vs parent | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
