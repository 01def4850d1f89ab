"""The ``quantize`` method: static INT8 (QDQ, calibrated, accuracy-aware) or FP16 weights.

INT8 flow (every step measured on held-out crops against the fp32 parent):

1. optional quantization-aware fine-tuning of a torch model (fake-quant weights and conv
   inputs, distilled from the fp32 parent; :mod:`pose_core.compression.quantize_qat`);
2. export to ONNX and ORT graph optimization (``quant_pre_process``);
3. activation equalization: weak channels of ReLU/ReLU6 outputs that feed depthwise convs are
   lifted to the tensor's range, the depthwise weights divided to match
   (:mod:`pose_core.compression.quantize_equalize`; ``equalize_activations``);
4. activation ranges from the chosen calibrator on ``num_calibration_crops`` crops;
5. QDQ quantization (u8 activations, s8 symmetric weights, per channel by default);
6. if the mean landmark error exceeds ``budget.max_mean_px``: per-node sensitivity, then the
   most harmful nodes go back to fp32 one at a time until the error is within it (or
   ``max_fp32_nodes`` is reached); then the fp32 set is cut back (least harmful first) until
   the graph is at most ``budget.max_latency_ratio`` times as slow as fp32;
7. the nodes reported as fp32 are checked in the final graph.

Whether the result is within budget is judged after the step, like every method's
(:mod:`pose_core.compression.budget`).

Dynamic quantization is deliberately not offered: on conv nets it is slower and inaccurate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pose_core.compression.base import (
    CompressibleModel,
    CompressionError,
    CompressionResult,
    OnnxModel,
)
from pose_core.compression.configs import QuantizeConfig
from pose_core.compression.registry import register

logger = logging.getLogger(__name__)


@register(QuantizeConfig)
def quantize(model: CompressibleModel, config: QuantizeConfig, data: Any) -> CompressionResult:
    """Quantize ``model`` (torch module or ONNX graph) as ``config`` says; never mutates it."""
    import onnx

    from pose_core.compression import quantize_graph as qg

    started = time.monotonic()
    crops = _crops(data)
    fp32 = qg.preprocess_fp32(onnx.load_from_string(_onnx_bytes(model, (1, *crops.shape[1:]))))
    fp32_bytes = fp32.SerializeToString()
    calib, holdout = _split(crops, config, int(getattr(data, "seed", 0)))
    if config.mode == "fp16_weights":
        out = qg.to_fp16_weights(fp32)
        report = _size_report(fp32_bytes, out.SerializeToString())
        report["fidelity_px"] = _fidelity(fp32_bytes, out.SerializeToString(), holdout)
        return _result(out, fp32, config, report, started)

    from pose_core.compression.quantize_int8 import quantize_int8

    out, report = quantize_int8(model, fp32, calib, holdout, config, data)
    report.update(_size_report(fp32_bytes, out.SerializeToString()))
    return _result(out, fp32, config, report, started)


def _result(
    out: Any, fp32: Any, config: QuantizeConfig, report: dict[str, Any], started: float
) -> CompressionResult:
    report = {"method": "quantize", "mode": config.mode, **report}
    report["wall_time_s"] = round(time.monotonic() - started, 2)
    return CompressionResult(
        model=OnnxModel(
            onnx_bytes=out.SerializeToString(),
            input_names=tuple(i.name for i in fp32.graph.input),
            output_names=tuple(o.name for o in fp32.graph.output),
        ),
        report=report,
    )


def _onnx_bytes(model: CompressibleModel, input_shape: tuple[int, ...]) -> bytes:
    if isinstance(model, OnnxModel):
        return model.onnx_bytes
    from pose_core.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="posecompress-export-") as tmp:
        path = Path(tmp, "model.onnx")
        export_onnx(model, path, input_shape)
        return path.read_bytes()


def _crops(data: Any) -> np.ndarray:
    """(N, 3, H, W) float32 crops from ``data`` (a CompressionData, a CropSet or an array)."""
    train = getattr(data, "train", data)
    images = getattr(train, "images", train)
    if not isinstance(images, np.ndarray) or images.ndim != 4 or len(images) < 2:
        raise CompressionError("quantization needs calibration crops: an (N>=2, 3, H, W) array")
    return np.ascontiguousarray(images, dtype=np.float32)


def _split(crops: np.ndarray, config: QuantizeConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint calibration and held-out crops (held-out: at most a quarter of the set)."""
    order = np.random.default_rng(seed).permutation(len(crops))
    n_holdout = min(config.num_holdout_crops, max(len(crops) // 4, 1))
    holdout = crops[np.sort(order[:n_holdout])]
    calib = crops[np.sort(order[n_holdout : n_holdout + config.num_calibration_crops])]
    return calib, holdout


def _fidelity(fp32_bytes: bytes, out_bytes: bytes, holdout: np.ndarray) -> float:
    from pose_core.compression.quantize_mixed import landmark_error_px, run_first_output

    ref = run_first_output(fp32_bytes, holdout)
    return round(landmark_error_px(ref, run_first_output(out_bytes, holdout)), 4)


def _size_report(fp32_bytes: bytes, out_bytes: bytes) -> dict[str, Any]:
    return {
        "fp32_bytes": len(fp32_bytes),
        "bytes": len(out_bytes),
        "size_ratio": round(len(out_bytes) / len(fp32_bytes), 4),
    }
