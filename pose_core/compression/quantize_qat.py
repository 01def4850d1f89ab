"""Quantization-aware fine-tuning of the graph ONNX Runtime will run, with its own scales.

:func:`qat_finetune` gets the step's torch :class:`~pose_core.models.graph.GraphModel`, the fp32
ONNX graph about to be quantized (activation equalization already applied; its initializers
keep the torch parameter names) and that graph's calibrated QDQ form. The student is a copy of
the GraphModel with the ONNX graph's weights and fake quantization exactly where the QDQ graph
quantizes:

* every tensor a per-tensor ``QuantizeLinear`` reads (the input and each conv / add output
  after its fused activation) is found among the GraphModel's tensors by its values on one
  calibration crop, and fake-quantized as u8 with that node's scale and zero point;
* every conv weight per output channel, symmetric s8 with ``scale = max|w| / 127`` (what ONNX
  Runtime's per-channel weight quantization computes, so the trained weights land on its grid).

Gradients pass straight through inside the ranges. Training is
:func:`pose_core.compression.distill.train_distill` against the fp32 parent; its held-out guard
scores the INT8 graph ONNX Runtime makes of the student's weights (:class:`Int8Scorer`), not the
student itself, whose output differs from ORT's by the rounding order of fused kernels. The
kept weights are frozen at their quantized values and exported; the caller quantizes them
with the same ranges. Earlier versions observed their own ranges in torch, which were not
ONNX Runtime's: their QAT did not carry over (docs/compression-results.md, sessions 6 and 9).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from pose_core.compression.base import CompressionError
from pose_core.models.graph import INPUT_TENSOR, GraphModel, Node

if TYPE_CHECKING:
    from pose_core.compression.configs import QuantizeConfig

logger = logging.getLogger(__name__)

#: ``(scale, zero_point)`` of a u8 per-tensor quantization
QuantParams = tuple[float, int]


class QatUnavailable(CompressionError):
    """The model cannot be matched to the graph it would be fine-tuned for."""


class PerChannelWeightFakeQuant(nn.Module):
    """Symmetric signed 8-bit fake quantization per output channel (axis 0)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().reshape(weight.shape[0], -1)
        scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)


def activation_quant_params(qdq: onnx.ModelProto) -> dict[str, QuantParams]:
    """Tensor name -> ``(scale, zero point)`` of every per-tensor u8 ``QuantizeLinear``."""
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    params: dict[str, QuantParams] = {}
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        scale, zero = inits.get(node.input[1]), inits.get(node.input[2])
        if scale is None or zero is None or scale.size != 1 or zero.dtype != np.uint8:
            continue
        params[node.input[0]] = (float(scale.reshape(())), int(zero.reshape(())))
    return params


def _onnx_tensor_values(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every node output of ``model`` (and its input) on ``x``."""
    from pose_core.compression.quantize_mixed import session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in outputs:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                outputs.add(name)
    sess: Any = session(probe.SerializeToString())
    input_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(None, {input_name: x}), strict=True))
    values[input_name] = x
    return values


def _graph_tensor_values(model: GraphModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every node output of ``model`` (and its input, as ``INPUT_TENSOR``) on ``x``."""
    values: dict[str, np.ndarray] = {INPUT_TENSOR: x}

    def record(node: Node, y: torch.Tensor) -> torch.Tensor:
        values[node.output] = y.detach().numpy().copy()
        return y

    previous, model.tensor_hook = model.tensor_hook, record
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        model.tensor_hook = previous
    return values


def match_tensors(
    model: GraphModel, graph: onnx.ModelProto, names: Mapping[str, Any], x: np.ndarray
) -> dict[str, str]:
    """ONNX tensor name (of ``names``) -> the GraphModel tensor with the same values on ``x``.

    ``model`` must compute ``graph``'s function; a tensor with no match is left out.
    """
    onnx_values = _onnx_tensor_values(graph, x)
    torch_values = _graph_tensor_values(model, x)
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, tensor in torch_values.items():
        by_shape.setdefault(tensor.shape, []).append(name)
    found: dict[str, str] = {}
    for name in names:
        value = onnx_values.get(name)
        if value is None:
            continue
        tol = 1e-3 * max(float(np.abs(value).max()), 1e-3)
        for candidate in by_shape.get(value.shape, []):
            if np.allclose(torch_values[candidate], value, rtol=0.0, atol=tol):
                found[name] = candidate
                break
    return found


class FakeQuantStudent:
    """A deep copy of a GraphModel with INT8 fake quantization installed at ``quant``
    (GraphModel tensor -> u8 ``(scale, zero point)``; ``INPUT_TENSOR`` for the input) and on
    every conv weight.

    ``module`` is what training updates; :meth:`finish` removes the activation fake-quant and
    freezes every conv weight at its quantized value.
    """

    def __init__(self, model: GraphModel, quant: Mapping[str, QuantParams]) -> None:
        self.module = copy.deepcopy(model).eval()
        quant = dict(quant)
        input_quant = quant.pop(INPUT_TENSOR, None)

        def fake_quant(node: Node, y: torch.Tensor) -> torch.Tensor:
            params = quant.get(node.output)
            if params is None:
                return y
            return torch.fake_quantize_per_tensor_affine(y, params[0], params[1], 0, 255)

        self.module.tensor_hook = fake_quant
        self._hooks: list[Any] = []
        if input_quant is not None:
            scale, zero = input_quant
            self._hooks.append(
                self.module.register_forward_pre_hook(
                    lambda _m, args: (
                        torch.fake_quantize_per_tensor_affine(args[0], scale, zero, 0, 255),
                        *args[1:],
                    )
                )
            )
        self._convs = [m for m in self.module.modules() if isinstance(m, nn.Conv2d)]
        for conv in self._convs:
            parametrize.register_parametrization(conv, "weight", PerChannelWeightFakeQuant())

    def finish(self) -> GraphModel:
        for hook in self._hooks:
            hook.remove()
        self.module.tensor_hook = None
        for conv in self._convs:
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        return self.module


def with_graph_weights(model: GraphModel, graph: onnx.ModelProto) -> GraphModel:
    """Copy of ``model`` with the initializers of ``graph`` that carry its parameter names (an
    export of ``model`` after graph-level rewrites such as activation equalization)."""
    student = copy.deepcopy(model).eval()
    state = student.state_dict()
    loaded = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
        for t in graph.graph.initializer
        if t.name in state and tuple(state[t.name].shape) == tuple(t.dims)
    }
    missing = [name for name in state if name not in loaded]
    if missing:
        raise QatUnavailable(
            f"the quantized graph does not carry {len(missing)} of the model's parameters "
            f"(first: {missing[0]!r}), so quantization-aware training cannot start from it"
        )
    student.load_state_dict(loaded)
    return student


def _export_fp32(model: GraphModel, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    from pose_core.compression.quantize_graph import preprocess_fp32
    from pose_core.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="posecompress-qat-") as tmp:
        path = Path(tmp, "qat.onnx")
        export_onnx(model, path, input_shape)
        return preprocess_fp32(onnx.load_model(path))


class Int8Scorer:
    """Held-out score of a fake-quant student as ONNX Runtime will run it: its quantized
    weights in a copy of ``template``, exported, quantized by ``quantize`` (the calibrated
    ranges) and run on the held-out crops, against ``fp32``'s outputs (mean landmark px).

    The student's own output is not ORT's: rounding order alone moves BlazePose-Full's INT8
    landmarks by about 4 px, so early stopping on it kept the wrong steps (session 9).
    """

    metric = "int8_landmark_px"

    def __init__(
        self,
        template: GraphModel,
        fp32: onnx.ModelProto,
        quantize: Callable[[onnx.ModelProto], onnx.ModelProto],
        images: np.ndarray,
    ) -> None:
        self._template, self._quantize, self._images = template, quantize, images
        self._fp32 = fp32.SerializeToString()
        self._reference: dict[bytes, np.ndarray] = {}

    def __call__(self, student: torch.nn.Module, idx: np.ndarray) -> float:
        from pose_core.compression.quantize_mixed import landmark_error_px, run_first_output

        crops = np.ascontiguousarray(self._images[idx], dtype=np.float32)
        key = np.asarray(idx).tobytes()
        if key not in self._reference:
            self._reference[key] = run_first_output(self._fp32, crops)
        plain = frozen_copy_of(student, self._template)
        graph = self._quantize(_export_fp32(plain, (1, *crops.shape[1:])))
        return landmark_error_px(
            self._reference[key], run_first_output(graph.SerializeToString(), crops)
        )


def frozen_copy_of(student: torch.nn.Module, template: GraphModel) -> GraphModel:
    """``template`` with ``student``'s parameters, each conv weight at its fake-quantized value
    (``student`` is a :class:`FakeQuantStudent` module of ``template``)."""
    plain = copy.deepcopy(template).eval()
    with torch.no_grad():
        for name, module in student.named_modules():
            if isinstance(module, nn.Conv2d):
                target = plain.get_submodule(name)
                assert isinstance(target, nn.Conv2d)
                target.weight.copy_(module.weight)
                if module.bias is not None and target.bias is not None:
                    target.bias.copy_(module.bias)
    return plain


def qat_finetune(
    model: GraphModel,
    fp32: onnx.ModelProto,
    qdq: onnx.ModelProto,
    quantize: Callable[[onnx.ModelProto], onnx.ModelProto],
    calib: np.ndarray,
    config: QuantizeConfig,
    data: Any,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Fine-tune ``model`` under ``qdq``'s quantization; the trained fp32 graph (same tensor
    names as ``fp32``) and the training report. ``quantize`` turns an fp32 graph into its
    INT8 graph with ``qdq``'s ranges: the held-out guard scores what it makes
    (:class:`Int8Scorer`)."""
    from pose_core.compression.configs import RecoveryConfig
    from pose_core.compression.data import CropSet
    from pose_core.compression.distill import frozen_copy, train_distill

    teacher = getattr(data, "teacher", None)
    if teacher is None:
        teacher = frozen_copy(model)
    start = with_graph_weights(model, fp32)
    params = activation_quant_params(qdq)
    matched = match_tensors(start, fp32, params, calib[:1])
    unmatched = sorted(set(params) - set(matched))
    if unmatched:
        logger.warning("QAT: %d quantized tensors not found in the model", len(unmatched))
    student = FakeQuantStudent(start, {matched[n]: params[n] for n in matched})
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
        student.module,
        teacher,
        crops,
        cfg,
        progress=None,
        should_stop=getattr(data, "should_stop", None),
        checkpoint_dir=Path(work_dir) / "qat" if work_dir is not None else None,
        scorer=Int8Scorer(start, fp32, quantize, crops.images),
    )
    out = _export_fp32(student.finish(), (1, *calib.shape[1:]))
    report = {
        **stats.as_dict(),
        "fake_quantized_tensors": len(matched),
        "unmatched_tensors": len(unmatched),
    }
    return out, report
