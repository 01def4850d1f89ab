"""Per-stage latency of the whole-image pipeline (detect / landmarks / total).

Compares, in interleaved rounds (this machine drifts), LiteRT (MediaPipe's runtime) and ONNX
Runtime runners, each with the detector tiled (default) and as one full-image pass
(MediaPipe). Prints medians in milliseconds and the number of people found.

    python bench/inference_stages.py --rounds 10 --threads 2 tests/data/ultralytics_bus.jpg
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pose_core.assets import ensure_blazepose_assets
from pose_core.export import export_onnx
from pose_core.importers.tflite import import_blazepose_detector, import_blazepose_landmark
from pose_core.inference.landmarks import BlazePoseLandmarkModel
from pose_core.inference.litert import LiteRTRunner
from pose_core.inference.pipeline import PosePipeline
from pose_core.inference.runtime import OnnxRunner

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache")
    args = parser.parse_args()

    assets = ensure_blazepose_assets(args.cache)
    work = Path(tempfile.mkdtemp(prefix="inference-bench-"))
    landmark_onnx = export_onnx(
        import_blazepose_landmark(assets.landmark_tflite, ("landmarks", "presence", "heatmap")),
        work / "landmark.onnx",
        (1, 3, 256, 256),
    )
    detector_onnx = export_onnx(
        import_blazepose_detector(assets.detector_tflite), work / "detector.onnx", (1, 3, 224, 224)
    )
    runners = {
        "litert": (
            LiteRTRunner(assets.landmark_tflite, args.threads, outputs=(0, 1, 3)),
            LiteRTRunner(assets.detector_tflite, args.threads),
        ),
        "onnxruntime": (
            OnnxRunner(landmark_onnx, args.threads),
            OnnxRunner(detector_onnx, args.threads),
        ),
    }
    pipelines = {
        f"{name} {mode}": PosePipeline(
            BlazePoseLandmarkModel(landmark),
            detector,
            tile_fraction=None if mode == "single-pass" else 0.65,
        )
        for name, (landmark, detector) in runners.items()
        for mode in ("tiled", "single-pass")
    }
    for path in args.images:
        image = np.asarray(Image.open(path).convert("RGB"))
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
        found: dict[str, int] = {}
        for name, pipeline in pipelines.items():  # warm-up
            found[name] = len(pipeline.predict(image))
        for _ in range(args.rounds):
            for name, pipeline in pipelines.items():
                samples[name].append(pipeline.predict_timed(image)[1])
        print(f"{path.name} ({image.shape[1]}x{image.shape[0]}), {args.rounds} rounds, ms:")
        for name, rows in samples.items():
            medians = {k: 1000 * statistics.median(r[k] for r in rows) for k in rows[0]}
            cells = "  ".join(f"{k} {v:7.1f}" for k, v in medians.items())
            print(f"  {name:26s} people {found[name]}  {cells}")


if __name__ == "__main__":
    main()
