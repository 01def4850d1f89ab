"""Recovery variants of a pruned or low-rank BlazePose-Full at equal wall time (dev held out).

Compresses the landmark model once (``--method prune`` to ``--target-macs`` or ``--method
lowrank`` to ``--params-ratio``, least-squares refit included), then recovers a copy per
``--variants`` entry (``RecoveryConfig`` overrides, :data:`VARIANTS`) for ``--time-budget-s``
each. The unlabeled photos are split by image: 7 in 8 train (detector crops, augmented), 1 in 8
are the probe, never trained on: held-out fidelity is the mean COCO-17 keypoint error (crop px)
and OKS against the fp32 parent on the probe crops. Dev AP (ground-truth boxes, torch forward)
comes with 95% paired-bootstrap intervals of the AP loss; the dev people are never seen by
refit, holdout or training. One row per variant:

    python bench/recovery_curve.py --method prune --target-macs 0.68 \\
        --variants landmark,features --time-budget-s 300
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compression import detector_fn  # noqa: E402
from bench.quantize import SHARED, DevSet  # noqa: E402
from pose_core.assets import ensure_blazepose_assets  # noqa: E402
from pose_core.compression.configs import LowRankConfig, PruneConfig, RecoveryConfig  # noqa: E402
from pose_core.compression.crops import build_cropset  # noqa: E402
from pose_core.compression.data import AugmentConfig, CompressionData, CropSet  # noqa: E402
from pose_core.compression.distill import frozen_copy, train_distill  # noqa: E402
from pose_core.compression.measure import count_macs_params, example_input  # noqa: E402
from pose_core.compression.registry import compress  # noqa: E402
from pose_core.evaluation.fidelity import fidelity_metrics  # noqa: E402
from pose_core.importers.tflite import import_blazepose_landmark  # noqa: E402
from pose_core.keypoints import BLAZEPOSE33_TO_COCO17  # noqa: E402

logger = logging.getLogger("bench.recovery_curve")

#: RecoveryConfig overrides compared at the same wall time
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"steps": 0},
    "landmark": {"feature_weight": 0.0},
    "landmark_no_holdout": {"feature_weight": 0.0, "guard_crops": 0},
    # session 8: a steadier early-stopping signal (3x the guard crops, scored half as often)
    "landmark_guard48": {"feature_weight": 0.0, "guard_crops": 48, "eval_every": 50},
    "features": {"feature_weight": 1.0},
    "features_only": {"feature_weight": 1.0, "landmark_weight": 0.0},
}


def run_model(model: torch.nn.Module, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(landmarks (N, 195), presence (N,)) of a torch forward in batches of 16."""
    marks, presence = [], []
    with torch.no_grad():
        for start in range(0, len(crops), 16):
            out = model.eval()(torch.from_numpy(crops[start : start + 16]))
            marks.append(out[0].reshape(len(out[0]), -1).numpy())
            presence.append(out[1].reshape(-1).numpy())
    return np.concatenate(marks), np.concatenate(presence)


def probe_fidelity(student: np.ndarray, parent: np.ndarray) -> tuple[float, float]:
    """(mean px, mean OKS) of COCO-17 keypoints in crop pixels, student vs parent."""
    coco = list(BLAZEPOSE33_TO_COCO17)
    s = student.reshape(len(student), 39, 5)[:, coco, :2]
    p = parent.reshape(len(parent), 39, 5)[:, coco, :2]
    lo, hi = p.min(axis=1), p.max(axis=1)
    boxes = np.concatenate([lo, np.maximum(hi - lo, 1.0)], axis=1)
    report = fidelity_metrics(s, p, boxes)
    return float(report.mean_error_px or 0.0), float(report.mean_oks or 0.0)


def split_photos(unlabeled: Path, work_dir: Path, every: int = 8) -> tuple[Path, Path]:
    """Two dataset dirs of symlinks: every ``every``-th photo (sorted by name) is the probe."""
    train, probe = work_dir / "unlabeled_train", work_dir / "unlabeled_probe"
    for d in (train, probe):
        (d / "images").mkdir(parents=True)
    for i, photo in enumerate(sorted((unlabeled / "images").iterdir())):
        target = probe if i % every == 0 else train
        (target / "images" / photo.name).symlink_to(photo.resolve())
    return train, probe


def compressed_without_recovery(
    parent: torch.nn.Module, args: argparse.Namespace, option: str, data: CompressionData
) -> torch.nn.Module:
    """The compressed model (refit included) for one ``--options`` entry: the prune
    allocation or the low-rank basis."""
    no_recovery = RecoveryConfig(steps=0)
    config: PruneConfig | LowRankConfig
    if args.method == "prune":
        config = PruneConfig(
            ratio=None,
            target_macs_ratio=args.target_macs,
            scope=args.scope,
            allocation=option,
            refit_crops=args.refit_crops,
            recovery=no_recovery,
        )
    else:
        config = LowRankConfig(
            params_ratio=args.params_ratio,
            basis=option,
            refit_crops=args.refit_crops,
            recovery=no_recovery,
        )
    result = compress(parent, config, data)
    assert isinstance(result.model, torch.nn.Module)
    return result.model


def cached_crops(args: argparse.Namespace, detect: Any) -> tuple[CropSet, CropSet]:
    """Train and probe crops, built once per ``--copies`` and kept under ``--crops-cache``
    (the detector pass over the photos is the slow part)."""
    path = args.crops_cache / f"unlabeled_split8_copies{args.copies}.npz"
    if path.exists():
        saved = np.load(path)
        return CropSet(saved["train"]), CropSet(saved["probe"])
    train_dir, probe_dir = split_photos(args.unlabeled, args.work_dir)
    train = build_cropset(
        [train_dir], augment=AugmentConfig(copies=args.copies), seed=0, detect=detect
    )
    probe = build_cropset([probe_dir], seed=0, detect=detect)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train=train.images, probe=probe.images)
    return train, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=SHARED / "dev")
    parser.add_argument("--unlabeled", type=Path, default=SHARED / "unlabeled")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "mediapipe")
    parser.add_argument("--method", choices=["prune", "lowrank"], default="prune")
    parser.add_argument("--target-macs", type=float, default=0.68)
    parser.add_argument("--scope", choices=["all", "block_internal"], default="block_internal")
    parser.add_argument("--params-ratio", type=float, default=0.68)
    parser.add_argument(
        "--options",
        default=None,
        help="comma-separated prune allocations (uniform, sensitivity) or low-rank bases "
        "(weights, activations); default: the config's default",
    )
    parser.add_argument("--refit-crops", type=int, default=PruneConfig().refit_crops)
    parser.add_argument("--crops-cache", type=Path, default=ROOT / ".cache" / "recovery_crops")
    parser.add_argument("--variants", default="landmark,features", help=", ".join(VARIANTS))
    parser.add_argument("--time-budget-s", type=float, default=300.0, help="per variant")
    parser.add_argument("--lr", type=float, default=RecoveryConfig().lr)
    parser.add_argument("--patience", type=int, default=RecoveryConfig().patience)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bootstrap", type=int, default=100, help="dev resamples for the CIs (0: none)"
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".cache" / "recovery_curve")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    assets = ensure_blazepose_assets(args.cache, allow_download=False)
    parent = import_blazepose_landmark(assets.landmark_tflite).eval()
    dev = DevSet(args.dev)
    shutil.rmtree(args.work_dir, ignore_errors=True)  # a stale checkpoint would be resumed
    train, probe = cached_crops(args, detector_fn(assets.detector_tflite))
    data = CompressionData(train=train, work_dir=args.work_dir / "work")
    parent_dev, parent_probe = run_model(parent, dev.crops), run_model(parent, probe.images)
    example = example_input(train)
    macs0, params0 = count_macs_params(parent, example)
    print(
        f"{len(train)} train crops, {len(probe)} probe crops (unlabeled, other photos), "
        f"{len(dev.crops)} dev people; fp32 dev AP {dev.ap(*parent_dev):.4f}; budget "
        f"{args.time_budget_s:.0f} s per variant, lr {args.lr:g}, batch {args.batch_size}, "
        f"{args.threads} threads",
        flush=True,
    )
    print(
        "| compression | variant | dev AP [95% CI] | AP loss [95% CI] | probe px | probe OKS "
        "| steps | kept step (holdout px start -> best) | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    default = PruneConfig().allocation if args.method == "prune" else LowRankConfig().basis
    for option in (args.options or default).split(","):
        started = time.monotonic()
        student0 = compressed_without_recovery(parent, args, option, data)
        macs1, params1 = count_macs_params(student0, example)
        label = (
            f"{args.method} {option}: MACs {macs1 / macs0:.3f}x, params {params1 / params0:.3f}x"
        )
        compress_s = time.monotonic() - started
        rows(args, label, compress_s, student0, parent, train, probe, dev, parent_dev, parent_probe)


def rows(
    args: argparse.Namespace,
    label: str,
    compress_s: float,
    student0: torch.nn.Module,
    parent: torch.nn.Module,
    train: CropSet,
    probe: CropSet,
    dev: DevSet,
    parent_dev: tuple[np.ndarray, np.ndarray],
    parent_probe: tuple[np.ndarray, np.ndarray],
) -> None:
    """One table row per ``--variants`` entry, recovering a copy of ``student0``."""
    teacher = frozen_copy(parent)
    for name in args.variants.split(","):
        student = copy.deepcopy(student0)
        for p in student.parameters():
            p.requires_grad_(True)
        overrides = {"steps": 1_000_000, **VARIANTS[name]}
        cfg = RecoveryConfig(
            time_budget_s=args.time_budget_s,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            **overrides,
        )
        t0 = time.monotonic()
        stats = train_distill(student, teacher, train, cfg)
        wall = time.monotonic() - t0
        ci = dev.ap_loss_interval(run_model(student, dev.crops), parent_dev, args.bootstrap)
        px, oks = probe_fidelity(run_model(student, probe.images)[0], parent_probe[0])
        kept = (
            f"{stats.best_step} ({stats.holdout_px_start:.2f} -> {stats.holdout_px_best:.2f})"
            if stats.best_step is not None
            else "-"
        )
        print(
            f"| {label} | {name} | {ci['ap']:.3f} [{ci['ap_lo']:.3f}, {ci['ap_hi']:.3f}] "
            f"| {ci['loss']:+.3f} [{ci['loss_lo']:+.3f}, {ci['loss_hi']:+.3f}] | {px:.2f} "
            f"| {oks:.3f} | {stats.steps_done} | {kept} | {compress_s:.0f} + {wall:.0f} |",
            flush=True,
        )
        del student


if __name__ == "__main__":
    main()
