"""INT8 / FP16 variants of BlazePose-Full: dev AP (ground-truth boxes), latency and size vs fp32.

Usage::

    python bench/quantize.py [--dev ../shared/data/dev] [--unlabeled ../shared/data/unlabeled]
        [--variants fp16,int8_percentile,...] [--rounds 60] [--calib-on unlabeled]

Calibration, sensitivity and QAT crops come from ``--unlabeled`` only by default, so the dev
people AP is measured on are held out (``--calib-on dev,unlabeled``: in-sample, as the first
session's figures were).

Every variant goes through ``pose_core.compression.compress`` (the product path). AP: COCO OKS AP
on the dev set, one square crop per labelled person (side 1.5 x max(w, h), no rotation,
256 x 256), BlazePose-33 -> COCO-17, keypoint score = sigmoid(visibility), person score =
presence x mean keypoint score. Latency: ONNX Runtime, batch 1, 2 threads, rounds interleaved
with the fp32 graph; the ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pose_core.compression.base import OnnxModel  # noqa: E402
from pose_core.compression.crops import (  # noqa: E402
    build_cropset,
    load_crop_sources,
    load_rgb,
)
from pose_core.compression.data import AugmentConfig, CropSet  # noqa: E402
from pose_core.compression.registry import compress, parse_config  # noqa: E402
from pose_core.evaluation.latency import measure_latency, median_ratio  # noqa: E402
from pose_core.evaluation.oks import KeypointPrediction, coco_keypoint_metrics  # noqa: E402
from pose_core.inference.crop import apply_affine, crop_to_image_matrix, warp_crop  # noqa: E402
from pose_core.keypoints import BLAZEPOSE33_TO_COCO17  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _ptq(percentile: float, **extra: Any) -> dict[str, Any]:
    return {
        "calibrator": "percentile",
        "percentile": percentile,
        "budget": {"max_mean_px": None},
        **extra,
    }


def _qat(steps: int) -> dict[str, Any]:
    """Quantization-aware fine-tuning under ORT's scales (the bench passes the torch GraphModel
    for these), on top of the default post-training graph."""
    return _ptq(99.9, qat_steps=steps)


VARIANTS: dict[str, dict[str, Any]] = {
    "int8_default": {},  # the product's defaults: budget, fp32 fallback within the latency budget
    "fp16_weights": {"mode": "fp16_weights"},
    "int8_minmax": {"calibrator": "minmax", "budget": {"max_mean_px": None}},
    "int8_entropy": {"calibrator": "entropy", "num_bins": 1024, "budget": {"max_mean_px": None}},
    **{f"int8_p{p:g}": _ptq(p) for p in (99.999, 99.99, 99.9, 99.8, 99.5, 99.0)},
    "int8_p99.99_mixed": _ptq(
        99.99,
        budget={"max_mean_px": 1.0},
        num_holdout_crops=12,
        max_fp32_nodes=16,
        num_calibration_crops=128,
    ),
    # session 8: activation equalization (the default) against none
    "int8_p99.9_no_equalize": _ptq(99.9, equalize_activations=False),
    "int8_p99.9_calib512": _ptq(99.9, num_calibration_crops=512),
    # session 9: QAT with ONNX Runtime's own scales (earlier sessions' QAT variants observed
    # their own ranges in torch; docs/compression-results.md)
    **{f"int8_qat_{n}": _qat(n) for n in (20, 100, 300)},
}


class DevSet:
    """Ground-truth-box crops of the dev set and the COCO dict to score them against."""

    def __init__(self, root: Path) -> None:
        import json

        self.coco = json.loads((root / "annotations.json").read_text())
        ids = {img["file_name"]: img["id"] for img in self.coco["images"]}
        sources = [s for s in load_crop_sources(root) if s.keypoints33 is not None]
        self.image_ids = [ids[s.image_path.name] for s in sources]
        self.matrices = [crop_to_image_matrix(s.rect, 256, 256) for s in sources]
        self.crops = np.stack(
            [
                warp_crop(load_rgb(s.image_path), s.rect, 256, 256).transpose(2, 0, 1) / 255.0
                for s in sources
            ]
        ).astype(np.float32)
        self._annotations: dict[int, list[dict[str, Any]]] = {
            img["id"]: [a for a in self.coco["annotations"] if a["image_id"] == img["id"]]
            for img in self.coco["images"]
        }

    def ap(self, landmarks: np.ndarray, presence: np.ndarray) -> float:
        """COCO AP of (N, 195) raw landmark outputs."""
        return self._ap(self._predictions(landmarks, presence), range(len(self.coco["images"])))

    def ap_loss_interval(
        self,
        candidate: tuple[np.ndarray, np.ndarray],
        reference: tuple[np.ndarray, np.ndarray],
        resamples: int = 300,
        seed: int = 0,
    ) -> dict[str, float]:
        """Candidate AP and its AP loss vs ``reference`` (both ``(landmarks, presence)``), with
        95% intervals from a paired bootstrap over dev images (both scored on each resample)."""
        cand, ref = self._predictions(*candidate), self._predictions(*reference)
        n = len(self.coco["images"])
        rng = np.random.default_rng(seed)
        aps, losses = [], []
        for _ in range(resamples):
            images = rng.integers(0, n, n)
            ap = self._ap(cand, images)
            aps.append(ap)
            losses.append(self._ap(ref, images) - ap)
        ap, ref_ap = self._ap(cand, range(n)), self._ap(ref, range(n))

        def pct(values: list[float], q: float) -> float:  # nan without resamples
            return float(np.percentile(values, q)) if values else float("nan")

        return {
            "ap": ap,
            "ap_lo": pct(aps, 2.5),
            "ap_hi": pct(aps, 97.5),
            "loss": ref_ap - ap,
            "loss_lo": pct(losses, 2.5),
            "loss_hi": pct(losses, 97.5),
        }

    def _predictions(self, landmarks: np.ndarray, presence: np.ndarray) -> list[KeypointPrediction]:
        values = landmarks.reshape(len(landmarks), 39, 5)
        preds = []
        for i, matrix in enumerate(self.matrices):
            chosen = values[i, list(BLAZEPOSE33_TO_COCO17)]
            score = 1.0 / (1.0 + np.exp(-chosen[:, 3:4]))
            kps = np.concatenate([apply_affine(matrix, chosen[:, :2]), score], axis=1)
            preds.append(
                KeypointPrediction(self.image_ids[i], kps, float(presence[i]) * float(score.mean()))
            )
        return preds

    def _ap(self, preds: list[KeypointPrediction], images: Sequence[int] | np.ndarray) -> float:
        """AP over the images at positions ``images`` of the COCO dict (repeats allowed: each
        copy gets its own id, as a bootstrap resample needs)."""
        coco: dict[str, Any] = {**self.coco, "images": [], "annotations": []}
        renamed: list[KeypointPrediction] = []
        for copy_id, position in enumerate(images, start=1):
            image = self.coco["images"][int(position)]
            coco["images"].append({**image, "id": copy_id})
            for ann in self._annotations[image["id"]]:
                coco["annotations"].append(
                    {**ann, "id": len(coco["annotations"]) + 1, "image_id": copy_id}
                )
            renamed += [
                KeypointPrediction(copy_id, p.keypoints, p.score)
                for p in preds
                if p.image_id == image["id"]
            ]
        return coco_keypoint_metrics(coco, renamed).ap


def run_all(model_bytes: bytes, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from pose_core.compression.quantize_mixed import session

    sess: Any = session(model_bytes)
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: crops[i : i + 1]}) for i in range(len(crops))]
    return np.concatenate([o[0].reshape(1, -1) for o in outs]), np.array(
        [float(o[1].ravel()[0]) for o in outs]
    )


def export_landmark_model(cache: Path) -> tuple[Any, bytes]:

    from pose_core.assets import ensure_blazepose_assets
    from pose_core.export import export_onnx
    from pose_core.importers.tflite import import_blazepose_landmark

    model = import_blazepose_landmark(ensure_blazepose_assets(cache).landmark_tflite).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "landmark_fp32.onnx")
        export_onnx(model, path, (1, 3, 256, 256))
        return model, path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=SHARED / "dev")
    parser.add_argument("--unlabeled", type=Path, default=SHARED / "unlabeled")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "mediapipe")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calib-copies", type=int, default=3)
    parser.add_argument(
        "--calib-on",
        default="unlabeled",
        choices=["unlabeled", "dev,unlabeled"],
        help="crops for calibration, sensitivity and QAT (dev: in-sample, optimistic)",
    )
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--bootstrap", type=int, default=200, help="AP-loss resamples")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("root").setLevel(logging.ERROR)

    torch_model, fp32_bytes = export_landmark_model(args.cache)
    dev = DevSet(args.dev)
    aug = AugmentConfig(copies=args.calib_copies)
    parts = [build_cropset([args.unlabeled], augment=aug, seed=1)]
    if "dev" in args.calib_on:
        parts.append(build_cropset([args.dev], augment=aug, seed=0))
    train = CropSet.concat(parts)
    print(f"dev people {len(dev.crops)}, calibration pool {len(train)} crops ({args.calib_on})")
    base_outputs = run_all(fp32_bytes, dev.crops)
    base_ap = dev.ap(*base_outputs)
    rows: list[tuple[str, float, dict[str, Any], bytes]] = []
    intervals: dict[str, dict[str, float]] = {}
    fp32_model = OnnxModel(fp32_bytes)
    for name in args.variants.split(","):
        config = parse_config({"method": "quantize", **VARIANTS[name]})
        start = time.monotonic()
        source = torch_model if getattr(config, "qat_steps", 0) else fp32_model
        result = compress(source, config, train)
        assert isinstance(result.model, OnnxModel)
        outputs = run_all(result.model.onnx_bytes, dev.crops)
        ap = dev.ap(*outputs)
        intervals[name] = dev.ap_loss_interval(outputs, base_outputs, resamples=args.bootstrap)
        report = dict(result.report, wall_s=round(time.monotonic() - start, 1))
        rows.append((name, ap, report, result.model.onnx_bytes))
        print(f"{name}: AP {ap:.4f} (loss {base_ap - ap:+.4f}) report {report}", flush=True)

    from pose_core.compression.quantize_mixed import session

    sessions: dict[str, Any] = {"fp32": session(fp32_bytes)}
    sessions.update({name: session(blob) for name, _, _, blob in rows})
    x = dev.crops[:1]
    runners = {
        k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()
    }
    lat = measure_latency(runners, rounds=args.rounds, warmup=5)
    print(f"\nfp32: AP {base_ap:.4f}, {lat['fp32'].p50:.2f} ms p50, {len(fp32_bytes)} bytes")
    print(
        "| variant | dev AP | AP loss [95% CI] | latency ratio | file ratio | fidelity px "
        "| fp32 nodes |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, ap, report, blob in rows:
        ci = intervals[name]
        print(
            f"| {name} | {ap:.4f} | {base_ap - ap:.4f} [{ci['loss_lo']:.3f}, {ci['loss_hi']:.3f}] "
            f"| {median_ratio(lat[name], lat['fp32']):.2f} "
            f"| {len(blob) / len(fp32_bytes):.3f} | {report.get('fidelity_px')} "
            f"| {len(report.get('excluded_nodes', []))} |"
        )


if __name__ == "__main__":
    main()
