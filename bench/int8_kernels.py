"""The default INT8 landmark graph on this CPU with its s8 weights as stored and with the dense
convs' weights re-encoded as u8 (what ``ort_session`` does on x86 CPUs without VNNI).

Usage::

    python bench/int8_kernels.py [--dev ../shared/data/dev] [--unlabeled ../shared/data/unlabeled]
        [--rounds 100] [--runs 3]

Calibration crops come from ``--unlabeled``; dev AP (ground-truth boxes) and the mean landmark
distance to fp32 on the dev crops are measured per encoding, then latency (batch 1, 2 threads,
rounds interleaved with fp32, the median of per-round ratios) ``--runs`` times. On a CPU
without VNNI the s8 form saturates (wrong landmarks); with VNNI or AMX both are exact.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quantize import SHARED, DevSet, export_landmark_model, run_all  # noqa: E402

from pose_core.compression.base import OnnxModel  # noqa: E402
from pose_core.compression.crops import build_cropset  # noqa: E402
from pose_core.compression.data import AugmentConfig  # noqa: E402
from pose_core.compression.quantize_mixed import landmark_error_px, session  # noqa: E402
from pose_core.compression.registry import compress, parse_config  # noqa: E402
from pose_core.evaluation.latency import measure_latency, median_ratio  # noqa: E402
from pose_core.inference import int8_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=SHARED / "dev")
    parser.add_argument("--unlabeled", type=Path, default=SHARED / "unlabeled")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "mediapipe")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # every session runs the graph it is given: this bench chooses the encodings itself
    os.environ[int8_weights.INT8_WEIGHTS_ENV] = "s8"
    int8_weights.u8s8_saturates.cache_clear()

    _, fp32 = export_landmark_model(args.cache)
    dev = DevSet(args.dev)
    train = build_cropset([args.unlabeled], augment=AugmentConfig(copies=3), seed=1)
    config = parse_config({"method": "quantize", "budget": {"max_mean_px": None}})
    result = compress(OnnxModel(fp32), config, train)
    assert isinstance(result.model, OnnxModel)
    stored = onnx.load_from_string(result.model.onnx_bytes)
    u8 = onnx.load_from_string(result.model.onnx_bytes)
    count = int8_weights.reencode_u8_weights(u8)
    graphs = {"fp32": fp32, "s8": stored.SerializeToString(), "u8_dense": u8.SerializeToString()}
    flags = int8_weights.cpu_flags() or frozenset()
    exact = sorted(flags & int8_weights.EXACT_U8S8_FLAGS)
    print(f"CPU int32-accumulating u8 x s8 flags: {exact or 'none'}; {count} dense weights")

    reference = run_all(fp32, dev.crops)
    base_ap = dev.ap(*reference)
    print("| encoding | dev AP | AP loss | dev px to fp32 |")
    print("|---|---|---|---|")
    for name in ("s8", "u8_dense"):
        outputs = run_all(graphs[name], dev.crops)
        ap = dev.ap(*outputs)
        px = landmark_error_px(reference[0], outputs[0])
        print(f"| {name} | {ap:.4f} | {base_ap - ap:.4f} | {px:.2f} |")

    sessions: dict[str, Any] = {name: session(blob) for name, blob in graphs.items()}
    x = dev.crops[:1]
    runners = {
        k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()
    }
    for run in range(args.runs):
        lat = measure_latency(runners, rounds=args.rounds, warmup=5)
        ratios = {k: round(median_ratio(lat[k], lat["fp32"]), 3) for k in ("s8", "u8_dense")}
        print(f"latency run {run + 1}: {ratios} of fp32 (fp32 p50 {lat['fp32'].p50:.2f} ms)")


if __name__ == "__main__":
    main()
