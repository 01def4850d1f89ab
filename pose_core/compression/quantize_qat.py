"""Quantization-aware fine-tuning: fake-quant a copy of the torch model, distil the fp32 parent.

Every ``nn.Conv2d`` of the student gets a weight parametrization that fake-quantizes per output
channel, symmetric signed 8-bit with ``scale = max|w| / 127`` (what ONNX Runtime's per-channel
symmetric weight quantization computes, so the exported weights land on exactly the grid ORT will
use). Activations are fake-quantized as unsigned 8-bit over fixed ranges observed on the
calibration crops (percentile of each batch, averaged):

* in a :class:`~pose_core.models.graph.GraphModel`, every tensor ONNX Runtime's QDQ pass
  quantizes: the input and each node output (after its fused activation) except the model's
  outputs and layout-only ops. On BlazePose that adds the 28 linear projection outputs that feed
  residual adds and the add outputs, which conv-input hooks alone never see;
* in any other module, the input of every conv (forward pre-hooks).

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from pose_core.compression.base import CompressionError
from pose_core.compression.quantize_graph import reaching_outputs
from pose_core.models.graph import INPUT_TENSOR, GraphModel, Node

if TYPE_CHECKING:
    from pose_core.compression.configs import QuantizeConfig

logger = logging.getLogger(__name__)


class PerChannelWeightFakeQuant(nn.Module):
    """Symmetric signed 8-bit fake quantization per output channel (axis 0)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().reshape(weight.shape[0], -1)
        scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def _u8_fake_quant(lo: float, hi: float) -> Any:
    """``x -> fake_quant(x)`` as unsigned 8-bit over ``[lo, hi]`` (widened to include 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zero_point = int(np.clip(round(-lo / scale), 0, 255))

    def fake_quant(x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)

    return fake_quant


def _activation_hook(lo: float, hi: float) -> Any:
    fake_quant = _u8_fake_quant(lo, hi)

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (fake_quant(args[0]), *args[1:])

    return hook


#: GraphModel ops whose output is only a view or padding of their input (not quantized apart)
_LAYOUT_NODE_OPS = frozenset({"pad", "reshape"})


def _quantized_tensors(model: GraphModel) -> set[str]:
    """Node outputs that ONNX Runtime's QDQ pass quantizes: all but outputs and layout ops.

    A tensor that reaches a model output through layout ops only stays fp32, as
    :func:`pose_core.compression.quantize_graph.output_tensors` keeps it.
    """
    producer = {node.output: node for node in model.nodes}

    def layout_input(name: str) -> str | None:
        node = producer.get(name)
        return node.inputs[0] if node is not None and node.op == "reshape" else None

    fp32 = reaching_outputs([out.tensor for out in model.outputs], layout_input)
    return {
        node.output
        for node in model.nodes
        if node.op not in _LAYOUT_NODE_OPS and node.output not in fp32
    }


def _quantile_range(values: torch.Tensor, percentile: float) -> tuple[float, float]:
    values = values.detach().flatten().float()
    if values.numel() > 1_000_000:
        values = values[:: values.numel() // 1_000_000 + 1]
    q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0])
    lo, hi = torch.quantile(values, q).tolist()
    return float(lo), float(hi)


def _fake_quant_graph(student: GraphModel, crops: np.ndarray, percentile: float) -> dict[str, Any]:
    """Observe every quantized tensor's range on ``crops``; fake-quantize it from now on.

    Returns the fake-quant functions by tensor name (the input's under ``INPUT_TENSOR``).
    """
    names = _quantized_tensors(student)
    observed: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    observed[INPUT_TENSOR] = []

    def record(node: Node, y: torch.Tensor) -> torch.Tensor:
        if node.output in names:
            observed[node.output].append(_quantile_range(y, percentile))
        return y

    student.tensor_hook = record
    try:
        with torch.no_grad():
            for start in range(0, len(crops), 8):
                batch = torch.from_numpy(crops[start : start + 8])
                observed[INPUT_TENSOR].append(_quantile_range(batch, percentile))
                student(batch)
    finally:
        student.tensor_hook = None
    quants = {
        name: _u8_fake_quant(float(np.mean([r[0] for r in rs])), float(np.mean([r[1] for r in rs])))
        for name, rs in observed.items()
        if rs
    }

    def fake_quant(node: Node, y: torch.Tensor) -> torch.Tensor:
        quant = quants.get(node.output)
        return y if quant is None else quant(y)

    student.tensor_hook = fake_quant
    return quants


def _observe_inputs(
    student: nn.Module, convs: list[nn.Conv2d], crops: np.ndarray, percentile: float
) -> list[tuple[float, float]]:
    """Per-conv input range: mean over batches of the ``percentile`` low/high values."""
    lows: list[list[float]] = [[] for _ in convs]
    highs: list[list[float]] = [[] for _ in convs]
    handles = []
    for i, conv in enumerate(convs):

        def record(_m: nn.Module, args: tuple[torch.Tensor, ...], i: int = i) -> None:
            lo, hi = _quantile_range(args[0], percentile)
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


class FakeQuantStudent:
    """A deep copy of a model with INT8 fake quantization installed (see the module docstring).

    ``module`` is what training updates; :meth:`finish` removes the activation fake-quant and
    freezes every conv weight at its quantized value (the model ONNX Runtime will then quantize
    without further rounding error in the weights).
    """

    def __init__(
        self,
        model: nn.Module,
        crops: np.ndarray,
        percentile: float,
        scope: Literal["all_tensors", "conv_inputs"] = "conv_inputs",
    ) -> None:
        self.module = copy.deepcopy(model).eval()
        self._convs = [m for m in self.module.modules() if isinstance(m, nn.Conv2d)]
        self._hooks: list[Any] = []
        if scope == "all_tensors" and isinstance(self.module, GraphModel):
            input_quant = _fake_quant_graph(self.module, crops, percentile)[INPUT_TENSOR]
            self._hooks.append(
                self.module.register_forward_pre_hook(
                    lambda _m, args: (input_quant(args[0]), *args[1:])
                )
            )
        else:
            ranges = _observe_inputs(self.module, self._convs, crops, percentile)
            self._hooks = [
                c.register_forward_pre_hook(_activation_hook(*r))
                for c, r in zip(self._convs, ranges, strict=True)
            ]
        for conv in self._convs:
            parametrize.register_parametrization(conv, "weight", PerChannelWeightFakeQuant())

    def finish(self) -> nn.Module:
        for hook in self._hooks:
            hook.remove()
        if isinstance(self.module, GraphModel):
            self.module.tensor_hook = None
        for conv in self._convs:
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        return self.module


def qat_finetune(
    model: Any, calib: np.ndarray, config: QuantizeConfig, data: Any
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Fake-quant fine-tuned copy of ``model``, exported and optimized for quantization."""
    from pose_core.compression.configs import RecoveryConfig
    from pose_core.compression.data import CropSet
    from pose_core.compression.distill import frozen_copy, train_distill
    from pose_core.compression.quantize_graph import preprocess_fp32
    from pose_core.export import export_onnx

    if not isinstance(model, nn.Module):
        raise CompressionError("quantization-aware fine-tuning needs a torch model, not ONNX")
    teacher = getattr(data, "teacher", None)
    if teacher is None:
        teacher = frozen_copy(model)
    fake_quant = FakeQuantStudent(
        model, calib[: min(len(calib), 64)], config.percentile, config.qat_fake_quant
    )
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
        fake_quant.module,
        teacher,
        crops,
        cfg,
        progress=None,
        should_stop=getattr(data, "should_stop", None),
        checkpoint_dir=Path(work_dir) / "qat" if work_dir is not None else None,
    )
    student = fake_quant.finish()
    with tempfile.TemporaryDirectory(prefix="posecompress-qat-") as tmp:
        path = Path(tmp, "qat.onnx")
        export_onnx(student, path, (1, *calib.shape[1:]))
        fp32 = preprocess_fp32(onnx.load_model(path))
    return fp32, stats.as_dict()
