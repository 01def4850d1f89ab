"""BlazePose landmark model latency: LiteRT vs the project's ONNX Runtime path vs torch eager.

All three run in this process, in interleaved rounds (every round calls each runtime once, in
a shuffled order; these machines drift up to 2x within minutes), batch 1, on the same real
256 x 256 person crop:

- ``litert``: MediaPipe's runtime (``ai_edge_litert`` Interpreter, XNNPACK) on the original
  ``pose_landmark_full.tflite`` -- it computes every output, segmentation included;
- ``ort``: what ``/predict`` serves: the TFLite importer's torch model with the built-in
  model's outputs (``pose_core.builtin.LANDMARK_OUTPUTS``: landmarks, presence, heatmap; the
  segmentation and world landmarks dropped at import), exported by
  ``pose_core.export.export_onnx`` and run by ``pose_core.inference.runtime.OnnxRunner``;
- ``ort-lp``: the same without the heatmap output (landmarks + presence only: no MediaPipe
  heatmap refinement, so about 0.035 lower dev AP, but the heatmap decoder is skipped);
- ``torch``: the served torch model, eager, ``torch.no_grad``.

Each runtime gets ``--threads`` threads (default 2). ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``
(set before torch loads): with OpenMP's default spin-waiting, torch's idle threads burn the
shared cores during the other runtimes' turns, and on a loaded 2-core machine torch itself
measured ~10x slower (1.2 s instead of ~0.12 s per crop). Prints p50 / p95 / mean per runtime and
the median per-round ratios ORT/LiteRT and torch/LiteRT (target: ORT/LiteRT <= 0.8), plus the
largest landmark difference of ORT and torch against LiteRT on that crop.

    python bench/runtimes.py --rounds 200 --warmup 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from pose_core.evaluation.latency import measure_latency, median_ratio  # noqa: E402


def person_crop(image_path: Path) -> np.ndarray:
    """(1, 3, 256, 256) float32 RGB in [0, 1]: a centred square crop of a real photo."""
    from pose_core.evaluation.dataset import load_rgb
    from pose_core.inference.crop import CropRect
    from pose_core.inference.landmarks import preprocess_crops

    image = load_rgb(image_path)
    height, width = image.shape[:2]
    side = 0.9 * min(width, height)  # a centred square: the content only needs to be a photo
    rect = CropRect(width / 2.0, height / 2.0, side, side)
    batch, _ = preprocess_crops(image, [rect])
    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache",
        help="where the BlazePose .tflite files are (or get extracted)",
    )
    parser.add_argument("--image", type=Path, default=REPO / "tests/data/ultralytics_zidane.jpg")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="skip torch eager")
    args = parser.parse_args(argv)

    import torch
    from ai_edge_litert.interpreter import Interpreter

    from pose_core.assets import ensure_blazepose_assets
    from pose_core.builtin import LANDMARK_OUTPUTS
    from pose_core.export import export_onnx
    from pose_core.importers.tflite import import_blazepose_landmark
    from pose_core.inference.runtime import OnnxRunner

    torch.set_num_threads(args.threads)
    assets = ensure_blazepose_assets(args.cache_dir)
    crop = person_crop(args.image)

    interpreter = Interpreter(model_path=str(assets.landmark_tflite), num_threads=args.threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    landmarks_index = interpreter.get_output_details()[0]["index"]
    nhwc = np.ascontiguousarray(crop.transpose(0, 2, 3, 1))

    def run_litert() -> np.ndarray:
        interpreter.set_tensor(input_index, nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(landmarks_index)

    model = import_blazepose_landmark(assets.landmark_tflite, outputs=LANDMARK_OUTPUTS).eval()
    without_heatmap = import_blazepose_landmark(
        assets.landmark_tflite, outputs=("landmarks", "presence")
    ).eval()
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        ort_runner = OnnxRunner(export_onnx(model, Path(tmp) / "a.onnx", crop.shape), args.threads)
        ort_lp_runner = OnnxRunner(
            export_onnx(without_heatmap, Path(tmp) / "b.onnx", crop.shape), args.threads
        )
    crop_tensor = torch.from_numpy(crop)

    def run_ort() -> np.ndarray:
        return ort_runner(crop)[0]

    def run_ort_lp() -> np.ndarray:
        return ort_lp_runner(crop)[0]

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return model(crop_tensor)[0].numpy()

    runners = {"litert": run_litert, "ort": run_ort, "ort-lp": run_ort_lp}
    if not args.no_torch:
        runners["torch"] = run_torch

    reference = run_litert().reshape(-1, 5)[:, :2]
    for name, run in runners.items():
        diff = np.abs(run().reshape(-1, 5)[:, :2] - reference).max()
        print(f"{name:>6}: max landmark |diff| vs litert {diff:.4f} px")

    stats = measure_latency(runners, rounds=args.rounds, warmup=args.warmup, seed=args.seed)
    print(
        f"\nlandmark model, batch 1, {args.threads} threads, {args.rounds} interleaved rounds "
        f"(+{args.warmup} warm-up), torch {torch.__version__}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'runtime':>8} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, s in stats.items():
        print(f"{name:>8} {s.p50:8.2f} {s.p95:8.2f} {s.mean:8.2f}")
    ratio = median_ratio(stats["ort"], stats["litert"])
    print(
        f"\nORT / LiteRT   median per-round ratio: {ratio:.3f}  "
        f"(target <= 0.8: {'met' if ratio <= 0.8 else 'NOT met'})"
    )
    lp_ratio = median_ratio(stats["ort-lp"], stats["litert"])
    print(f"ORT-lp / LiteRT median per-round ratio: {lp_ratio:.3f}")
    if "torch" in stats:
        print(
            f"torch / LiteRT median per-round ratio: "
            f"{median_ratio(stats['torch'], stats['litert']):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
