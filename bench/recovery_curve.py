"""Dev AP during distillation recovery of a pruned or low-rank BlazePose-Full (dev held out).

Compresses the landmark model once (``--method prune`` to ``--target-macs`` or ``--method lowrank``
to ``--params-ratio``, least-squares refit included), then distils the fp32 parent into a copy
for each ``--lr``, scoring dev AP (ground-truth boxes, torch forward) every ``--eval-every``
steps. Training crops come from ``--unlabeled`` only (detector crops, augmented): the dev people
are never seen by refit, guard or training. Prints one table row per evaluation:

    python bench/recovery_curve.py --method prune --target-macs 0.68 --lr 1e-6,3e-6 --steps 600
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.compression import detector_fn  # noqa: E402
from bench.quantize import SHARED, DevSet  # noqa: E402
from pose_core.assets import ensure_blazepose_assets  # noqa: E402
from pose_core.compression.configs import LowRankConfig, PruneConfig, RecoveryConfig  # noqa: E402
from pose_core.compression.data import AugmentConfig, CompressionData, build_cropset  # noqa: E402
from pose_core.compression.distill import frozen_copy, train_distill  # noqa: E402
from pose_core.compression.measure import count_macs_params, example_input  # noqa: E402
from pose_core.compression.registry import compress  # noqa: E402
from pose_core.importers.tflite import import_blazepose_landmark  # noqa: E402

logger = logging.getLogger("bench.recovery_curve")


def dev_ap(model: torch.nn.Module, dev: DevSet) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(dev.crops))
    return dev.ap(out[0].reshape(len(dev.crops), -1).numpy(), out[1].reshape(-1).numpy())


def compressed_without_recovery(
    parent: torch.nn.Module, args: argparse.Namespace, data: CompressionData
) -> torch.nn.Module:
    no_recovery = RecoveryConfig(steps=0)
    config: PruneConfig | LowRankConfig
    if args.method == "prune":
        config = PruneConfig(
            ratio=None, target_macs_ratio=args.target_macs, scope=args.scope, recovery=no_recovery
        )
    else:
        config = LowRankConfig(params_ratio=args.params_ratio, recovery=no_recovery)
    result = compress(parent, config, data)
    assert isinstance(result.model, torch.nn.Module)
    return result.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=SHARED / "dev")
    parser.add_argument("--unlabeled", type=Path, default=SHARED / "unlabeled")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "mediapipe")
    parser.add_argument("--method", choices=["prune", "lowrank"], default="prune")
    parser.add_argument("--target-macs", type=float, default=0.68)
    parser.add_argument("--scope", choices=["all", "block_internal"], default="block_internal")
    parser.add_argument("--params-ratio", type=float, default=0.68)
    parser.add_argument("--lr", default="1e-6,3e-6", help="comma-separated learning rates")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".cache" / "recovery_curve")
    parser.add_argument(
        "--fixed-crops", action="store_true", help="no online augmentation (RecoveryConfig)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    assets = ensure_blazepose_assets(args.cache, allow_download=False)
    parent = import_blazepose_landmark(assets.landmark_tflite).eval()
    dev = DevSet(args.dev)
    train = build_cropset(
        [args.unlabeled],
        augment=AugmentConfig(copies=args.copies),
        seed=0,
        detect=detector_fn(assets.detector_tflite),
    )
    work_dir = args.work_dir
    shutil.rmtree(work_dir, ignore_errors=True)  # a stale checkpoint would be resumed
    data = CompressionData(train=train, work_dir=work_dir)
    base_ap = dev_ap(parent, dev)
    started = time.monotonic()
    student0 = compressed_without_recovery(parent, args, data)
    example = example_input(train)
    macs0, params0 = count_macs_params(parent, example)
    macs1, params1 = count_macs_params(student0, example)
    print(
        f"{args.method}: MACs {macs1 / macs0:.3f}x, params {params1 / params0:.3f}x, "
        f"{len(train)} train crops (unlabeled), {len(dev.crops)} dev people, "
        f"compressed + refit in {time.monotonic() - started:.0f} s; fp32 dev AP {base_ap:.4f}",
        flush=True,
    )
    print("| lr | step | elapsed s | dev AP | AP loss | train loss |")
    print("|---|---|---|---|---|---|")
    start_ap = dev_ap(student0, dev)
    print(f"| - | 0 | 0 | {start_ap:.4f} | {base_ap - start_ap:+.4f} | - |", flush=True)
    teacher = frozen_copy(parent)
    for lr in (float(v) for v in args.lr.split(",")):
        student = copy.deepcopy(student0)
        for p in student.parameters():
            p.requires_grad_(True)
        for chunk_end in range(args.eval_every, args.steps + 1, args.eval_every):
            # one run per evaluation point, resumed from its checkpoint: the lr schedule
            # (warm-up, cosine over --steps) is the one a single run of --steps would follow
            cfg = RecoveryConfig(
                steps=args.steps,
                batch_size=args.batch_size,
                lr=lr,
                checkpoint_every=args.eval_every,
                guard_crops=0,
                online_augment=not args.fixed_crops,
            )
            t0 = time.monotonic()
            stats = _train_until(student, teacher, data, cfg, chunk_end)
            ap = dev_ap(student.eval(), dev)
            print(
                f"| {lr:g} | {chunk_end} | {time.monotonic() - t0:.0f} | {ap:.4f} "
                f"| {base_ap - ap:+.4f} | {stats['last_loss']:.3f} |",
                flush=True,
            )
        del student


def _train_until(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    data: CompressionData,
    cfg: RecoveryConfig,
    stop_at: int,
) -> dict[str, Any]:
    """Train ``student`` in place up to step ``stop_at`` of a ``cfg.steps`` schedule."""
    done = {"step": 0}

    def should_stop() -> bool:
        return done["step"] >= stop_at

    def progress(fraction: float, message: str) -> None:
        done["step"] = round(fraction * cfg.steps)  # no time budget: fraction = step / steps

    stats = train_distill(
        student,
        teacher,
        data.train,
        cfg,
        progress=progress,
        should_stop=should_stop,
        checkpoint_dir=data.work_dir / "curve",
    )
    return stats.as_dict()


if __name__ == "__main__":
    main()
