"""COCO AP of BlazePose under LiteRT vs the ONNX Runtime model ``/predict`` serves.

Same protocol for both (``pose_core.evaluation``): ground-truth-box mode (square crop of side
1.5 x max(w, h) around each labelled person, no rotation, 256 x 256) and detector mode (end
to end). The LiteRT pipeline runs the original ``.tflite`` files; the ORT pipeline runs the
built-in model's files exactly as ``posecompress`` stores and serves them
(``pose_core.builtin.build_blazepose_bundle``: landmark + detector ONNX) through
``pose_core.inference.runtime.OnnxRunner``. Both give the landmark decoder the same outputs
(landmarks, presence, heatmap, so both refine landmarks from the heatmap as MediaPipe does);
decoding is shared. Issue 3 requires the
ground-truth-box APs to agree within 0.005; the exit status is 1 when they do not.

    python bench/eval_runtimes.py --dataset ../shared/data/dev
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from pose_core.evaluation.protocol import (  # noqa: E402
    EvaluationMode,
    EvaluationReport,
    TopDownPipeline,
    evaluate,
)

AP_TOLERANCE = 0.005


def litert_pipeline(cache_dir: Path, threads: int) -> TopDownPipeline:
    """BlazePose detector + landmark model on MediaPipe's LiteRT interpreter."""
    from pose_core.assets import ensure_blazepose_assets
    from pose_core.inference.landmarks import BlazePoseLandmarkModel
    from pose_core.inference.litert import LiteRTRunner
    from pose_core.inference.pipeline import PosePipeline

    assets = ensure_blazepose_assets(cache_dir)
    # TFLite output order: 0 landmarks, 1 presence, 2 segmentation, 3 heatmap, 4 world landmarks
    landmark = LiteRTRunner(assets.landmark_tflite, threads=threads, outputs=[0, 1, 3])
    detector = LiteRTRunner(assets.detector_tflite, threads=threads)
    return PosePipeline(BlazePoseLandmarkModel(landmark), detector)


def onnx_runtime_pipeline(cache_dir: Path, threads: int, work_dir: Path) -> TopDownPipeline:
    """The built-in model's ONNX files (as stored and served) on ONNX Runtime."""
    from pose_core.builtin import build_blazepose_bundle
    from pose_core.inference.landmarks import BlazePoseLandmarkModel
    from pose_core.inference.pipeline import PosePipeline
    from pose_core.inference.runtime import OnnxRunner
    from pose_core.roles import ROLE_DETECTOR, ROLE_MODEL

    bundle = build_blazepose_bundle(cache_dir, work_dir)
    return PosePipeline(
        BlazePoseLandmarkModel(OnnxRunner(bundle.artifacts[ROLE_MODEL], threads)),
        OnnxRunner(bundle.artifacts[ROLE_DETECTOR], threads),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared/data/dev")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every report here")
    args = parser.parse_args(argv)

    from pose_core.evaluation.dataset import load_dataset

    dataset = load_dataset(args.dataset)
    reports: dict[str, dict[str, EvaluationReport]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        pipelines = {
            "litert": litert_pipeline(args.cache_dir, args.threads),
            "ort": onnx_runtime_pipeline(args.cache_dir, args.threads, Path(tmp)),
        }
        for name, pipeline in pipelines.items():
            reports[name] = {
                mode.value: evaluate(pipeline, dataset, mode) for mode in EvaluationMode
            }

    print(f"dataset {args.dataset}: {len(dataset)} images, {dataset.num_people} labelled people")
    print(
        f"{'runtime':>8} {'mode':>9} {'AP':>7} {'AP50':>7} {'AP75':>7} {'AR':>7} "
        f"{'PCK@0.2':>8} {'err px':>7} {'people':>7} {'preds':>6}"
    )
    for name, by_mode in reports.items():
        for mode, r in by_mode.items():
            print(
                f"{name:>8} {mode:>9} {r.ap:7.4f} {r.ap50:7.4f} {r.ap75:7.4f} {r.ar:7.4f} "
                f"{r.pck or 0:8.4f} {r.mean_error_px or 0:7.2f} {r.n_people:7d} "
                f"{r.n_predictions:6d}"
            )
    gt_mode = EvaluationMode.GT_BOXES.value
    difference = abs(reports["ort"][gt_mode].ap - reports["litert"][gt_mode].ap)
    verdict = "met" if difference <= AP_TOLERANCE else "NOT met"
    print(
        f"\nground-truth-box AP |ORT - LiteRT| = {difference:.4f} "
        f"(tolerance {AP_TOLERANCE}: {verdict})"
    )
    print(f"crop rule: {reports['ort'][gt_mode].crop_rule}")
    print(f"score rule: {reports['ort'][gt_mode].score_rule}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {n: {m: r.to_dict() for m, r in by.items()} for n, by in reports.items()}, indent=1
            )
        )
    return 0 if difference <= AP_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
