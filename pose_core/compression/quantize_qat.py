"""Quantization-aware fine-tuning: fake-quant a copy of the torch model, distil the fp32 parent.

Every ``nn.Conv2d`` of the student gets

* a weight parametrization that fake-quantizes per output channel, symmetric signed 8-bit with
  ``scale = max|w| / 127`` (what ONNX Runtime's per-channel symmetric weight quantization
  computes, so the exported weights land on exactly the grid ORT will use), and
* a forward pre-hook that fake-quantizes its input as unsigned 8-bit over a fixed range
  observed on the calibration crops (percentile of each batch, averaged).

Both pass gradients straight through inside the range. Training is
:func:`pose_core.compression.distill.train_distill` (teacher = ``data.teacher`` or a frozen copy
of the input). Afterwards the weights are frozen at their quantized values, the hooks removed,
and the model exported to ONNX for the usual calibration + QDQ pass.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from pose_core.compression.base import CompressionError

if TYPE_CHECKING:
    from pose_core.compression.quantize import QuantizeConfig

logger = logging.getLogger(__name__)

class PerChannelWeightFakeQuant(nn.Module):
    """Symmetric signed 8-bit fake quantization per output channel (axis 0)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().reshape(weight.shape[0], -1)
        scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def _activation_hook(lo: float, hi: float) -> Any:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zero_point = int(np.clip(round(-lo / scale), 0, 255))

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = torch.fake_quantize_per_tensor_affine(args[0], scale, zero_point, 0, 255)
        return (x, *args[1:])

    return hook


def _observe_inputs(
    student: nn.Module, convs: list[nn.Conv2d], crops: np.ndarray, percentile: float
) -> list[tuple[float, float]]:
    """Per-conv input range: mean over batches of the ``percentile`` low/high values."""
    lows: list[list[float]] = [[] for _ in convs]
    highs: list[list[float]] = [[] for _ in convs]
    handles = []
    for i, conv in enumerate(convs):

        def record(_m: nn.Module, args: tuple[torch.Tensor, ...], i: int = i) -> None:
            values = args[0].detach().flatten().float()
            if values.numel() > 1_000_000:
                values = values[:: values.numel() // 1_000_000 + 1]
            q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0])
            lo, hi = torch.quantile(values, q).tolist()
            lows[i].append(lo)
            highs[i].append(hi)

        handles.append(conv.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            for start in range(0, len(crops), 8):
                student(torch.from_numpy(crops[start : start + 8]))
    finally:
        for h in handles:
            h.remove()
    return [(float(np.mean(lo)), float(np.mean(hi))) for lo, hi in zip(lows, highs, strict=True)]


def qat_finetune(
    model: Any, calib: np.ndarray, config: QuantizeConfig, data: Any
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Fake-quant fine-tuned copy of ``model``, exported and optimized for quantization."""
    from pose_core.compression.data import CropSet
    from pose_core.compression.distill import RecoveryConfig, frozen_copy, train_distill
    from pose_core.compression.quantize_graph import preprocess_fp32
    from pose_core.export import export_onnx

    if not isinstance(model, nn.Module):
        raise CompressionError("quantization-aware fine-tuning needs a torch model, not ONNX")
    teacher = getattr(data, "teacher", None)
    if teacher is None:
        teacher = frozen_copy(model)
    student = copy.deepcopy(model).eval()
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
    ranges = _observe_inputs(student, convs, calib[: min(len(calib), 64)], config.percentile)
    hooks = [
        c.register_forward_pre_hook(_activation_hook(*r))
        for c, r in zip(convs, ranges, strict=True)
    ]
    for conv in convs:
        parametrize.register_parametrization(conv, "weight", PerChannelWeightFakeQuant())
    train = getattr(data, "train", data)
    crops = train if isinstance(train, CropSet) else CropSet(calib)
    cfg = RecoveryConfig(
        steps=config.qat_steps,
        batch_size=config.qat_batch_size,
        lr=config.qat_learning_rate,
        checkpoint_every=max(config.qat_steps // 4, 1),
    )
    work_dir = getattr(data, "work_dir", None)
    stats = train_distill(
        student,
        teacher,
        crops,
        cfg,
        progress=None,
        should_stop=getattr(data, "should_stop", None),
        checkpoint_dir=Path(work_dir) / "qat" if work_dir is not None else None,
    )
    for h in hooks:
        h.remove()
    for conv in convs:
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    with tempfile.TemporaryDirectory(prefix="posecompress-qat-") as tmp:
        path = Path(tmp, "qat.onnx")
        export_onnx(student, path, (1, *calib.shape[1:]))
        fp32 = preprocess_fp32(onnx.load_model(path))
    return fp32, stats.as_dict()
