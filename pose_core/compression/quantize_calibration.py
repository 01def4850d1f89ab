"""Activation ranges for static INT8: ONNX Runtime's MinMax / Percentile / Entropy calibrators.

The calibrators are built with ``create_calibrator`` directly (``quantize_static`` cannot set the
histogram bin count, and with its default 128 bins the Entropy calibrator has a single candidate
threshold, i.e. it degenerates to MinMax). The ranges come back as plain ``(min, max)`` floats
so the caller can inspect them, log them and pass them to
:func:`pose_core.compression.quantize_graph.quantize_qdq`.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from pose_core.compression.configs import Calibrator

CHUNK = 16  #: crops per collect_data call


class _ArrayReader:
    """``CalibrationDataReader`` over an (N, C, H, W) array, ``batch`` samples per call."""

    def __init__(self, input_name: str, crops: np.ndarray, batch: int) -> None:
        self._name = input_name
        self._crops = crops
        self._batch = batch
        self._iter: Iterator[int] = iter(range(0, len(crops), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._iter, None)
        if start is None:
            return None
        return {self._name: self._crops[start : start + self._batch]}

    def __len__(self) -> int:
        return (len(self._crops) + self._batch - 1) // self._batch


def calibrate_ranges(
    model: onnx.ModelProto,
    crops: np.ndarray,
    *,
    method: Calibrator,
    percentile: float = 99.99,
    num_bins: int = 2048,
    batch: int = 1,
) -> dict[str, tuple[float, float]]:
    """Run ``crops`` through ``model`` and return every quantizable activation's range.

    Args:
        model: fp32 graph with one input (batch dimension of ``batch`` or dynamic).
        crops: (N, C, H, W) float32 calibration inputs.
        method: ``minmax`` (observed extremes), ``percentile`` (clip ``100 - percentile``
            percent of the values, per tensor) or ``entropy`` (KL-divergence threshold on a
            ``num_bins`` histogram).
        percentile: for ``percentile``, the kept percentage (e.g. 99.99).
        num_bins: histogram bins for ``percentile`` and ``entropy``.
        batch: calibration batch size (1 for graphs with a fixed batch of 1).

    Returns:
        tensor name -> ``(min, max)`` with ``min <= 0 <= max`` not enforced (the quantizer does).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if len(crops) == 0:
        raise ValueError("calibration needs at least one crop")
    options: dict[str, object]
    if method == "minmax":
        calib_method, options = CalibrationMethod.MinMax, {}
    elif method == "percentile":
        calib_method = CalibrationMethod.Percentile
        options = {"num_bins": num_bins, "percentile": percentile, "symmetric": False}
    elif method == "entropy":
        calib_method = CalibrationMethod.Entropy
        options = {"num_bins": num_bins, "num_quantized_bins": 255, "symmetric": False}
    else:
        raise ValueError(f"unknown calibrator {method!r}")

    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="posecompress-calib-") as tmp:
        path = Path(tmp, "model.onnx")
        onnx.save_model(model, path)
        # ORT's histogram calibrators print progress to stdout: keep it out of service logs.
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator = create_calibrator(
                path,
                op_types,
                augmented_model_path=str(Path(tmp, "augmented.onnx")),
                calibrate_method=calib_method,
                extra_options=options,
            )
            # ORT keeps every intermediate output of one collect_data call in memory (GBs for
            # hundreds of 256 x 256 crops): feed it in chunks, its ranges/histograms merge.
            for start in range(0, len(crops), CHUNK):
                chunk = crops[start : start + CHUNK].astype(np.float32)
                calibrator.collect_data(_ArrayReader(input_name, chunk, batch))
            tensors = calibrator.compute_data()
    ranges: dict[str, tuple[float, float]] = {}
    for name in tensors:
        lo, hi = tensors[name].range_value
        ranges[name] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
    return ranges
