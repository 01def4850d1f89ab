"""ONNX graph operations behind the ``quantize`` method: QDQ INT8, FP16 weights, graph checks.

Everything here works on ``onnx.ModelProto`` objects and serialized bytes; nothing imports
torch. INT8 graphs use ONNX Runtime's QDQ format with unsigned 8-bit activations and signed
8-bit symmetric weights (per channel when asked), the combination ORT's x86 (VNNI) kernels run
fastest. Removable activations (``Relu``/``Clip`` after a quantized node) are folded into the
producer's output quantization, as ORT does by default: the tensor then keeps the activation's
name but is unclipped until its Q/DQ pair. An excluded consumer that read it raw would skip the
ReLU6, which is why :func:`pose_core.compression.quantize_mixed.keep_fp32` leaves such inputs
on their Q/DQ pair.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

#: Node types whose weights (second input) carry the bulk of the parameters.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: element-wise merges of two paths; their wide output ranges are candidates for fp32 too
RESIDUAL_OPS = frozenset({"Add", "Concat"})


class QuantizeGraphError(Exception):
    """ONNX Runtime could not quantize or optimize a graph."""


def preprocess_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference + ORT graph optimization (BN folding, constant folding) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="posecompress-q-") as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
        onnx.save_model(model, src)
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        except Exception as exc:  # ORT raises plain Exceptions of many kinds here
            raise QuantizeGraphError(f"quant_pre_process failed: {exc}") from exc
        return onnx.load_model(dst)


def quantize_qdq(
    model: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    *,
    per_channel: bool,
    nodes_to_exclude: Iterable[str] = (),
) -> onnx.ModelProto:
    """Static INT8 QDQ quantization of ``model`` with precomputed activation ``ranges``.

    Args:
        model: fp32 graph (ideally after :func:`preprocess_fp32`).
        ranges: activation tensor name -> ``(min, max)``; tensors not listed stay fp32.
        per_channel: per-output-channel weight scales (else one scale per tensor).
        nodes_to_exclude: node names that stay fp32 (inputs and weights not quantized).

    Returns:
        The QDQ model (u8 activations, s8 symmetric weights).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {
        name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
        for name, (lo, hi) in ranges.items()
    }
    tensors = TensorsData(CalibrationMethod.MinMax, data)
    with tempfile.TemporaryDirectory(prefix="posecompress-q-") as tmp:
        src, dst, cache = Path(tmp, "in.onnx"), Path(tmp, "out.onnx"), Path(tmp, "ranges.json")
        onnx.save_model(model, src)
        save_tensors_data(tensors, cache)
        try:
            quantize_static(
                str(src),
                str(dst),
                calibration_data_reader=None,
                calibration_cache_path=str(cache),
                calibrate_method=CalibrationMethod.MinMax,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                nodes_to_exclude=sorted(set(nodes_to_exclude)),
                extra_options={"WeightSymmetric": True},
            )
        except Exception as exc:
            raise QuantizeGraphError(f"quantize_static failed: {exc}") from exc
        return onnx.load_model(dst)


def weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes whose second input is an initializer (conv / gemm weights), in order."""
    inits = {t.name for t in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits
    ]


def float_weighted_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of weighted nodes that still run in floating point (weight is a float initializer).

    In a QDQ graph, a quantized node reads its weight through ``DequantizeLinear``; a node
    left in fp32 reads a float initializer directly (possibly through a ``Cast`` for fp16).
    """
    floats = {
        t.name
        for t in model.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    }
    cast_of_float = {
        n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in floats
    }
    return {
        n.name
        for n in model.graph.node
        if n.op_type in WEIGHTED_OPS
        and len(n.input) > 1
        and (n.input[1] in floats or n.input[1] in cast_of_float)
    }


def to_fp16_weights(model: onnx.ModelProto, min_elements: int = 16) -> onnx.ModelProto:
    """Store every float initializer with ``>= min_elements`` values as fp16 plus a ``Cast``.

    Inputs, outputs and all arithmetic stay fp32, so ONNX Runtime's CPU provider runs the graph
    unchanged (it folds the casts once at session start): half the file, fp32-speed inference.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept: list[onnx.TensorProto] = []
    casts: list[onnx.NodeProto] = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        half = numpy_helper.to_array(init).astype(np.float16)
        kept.append(numpy_helper.from_array(half, name=f"{init.name}__fp16"))
        casts.append(
            helper.make_node(
                "Cast",
                [f"{init.name}__fp16"],
                [init.name],
                name=f"{init.name}__cast_fp32",
                to=TensorProto.FLOAT,
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(out)
    return out


#: ops that only move data: a tensor reaching a graph output through them is an output too
_LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def output_tensors(model: onnx.ModelProto) -> set[str]:
    """Graph outputs plus the tensors feeding them through layout-only ops.

    Leaving these out of the calibration ranges keeps the model's outputs fp32: a single u8
    scale over BlazePose's 195 landmark values (range about +-265) would be a 2 px step.
    """
    producer = {o: n for n in model.graph.node for o in n.output}

    def layout_input(name: str) -> str | None:
        node = producer.get(name)
        return node.input[0] if node is not None and node.op_type in _LAYOUT_OPS else None

    return reaching_outputs([o.name for o in model.graph.output], layout_input)


def reaching_outputs(outputs: Iterable[str], layout_input: Callable[[str], str | None]) -> set[str]:
    """``outputs`` plus every tensor that reaches one through layout-only producers;
    ``layout_input(t)`` is the input of ``t``'s producer when that is a layout op, else None."""
    found: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in found:
            continue
        found.add(name)
        source = layout_input(name)
        if source is not None:
            stack.append(source)
    return found


def strip_qdq(model: onnx.ModelProto, tensors: set[str]) -> onnx.ModelProto:
    """Copy of a QDQ ``model`` with the Q/DQ pairs on ``tensors`` removed (they stay fp32).

    ORT renames a graph output ``y`` it quantizes: the producer writes ``y_QuantizeLinear_Input``
    and the last DequantizeLinear writes ``y``; the producer gets ``y`` back here.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    outputs = {o.name for o in graph.output}
    suffix = "_QuantizeLinear_Input"
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        raw = q.input[0]
        base = raw[: -len(suffix)] if raw.endswith(suffix) else raw
        if base not in tensors:
            continue
        dqs = [
            n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]
        ]
        if len(dqs) != sum(q.output[0] in n.input for n in graph.node):
            continue  # the quantized tensor is also read directly: leave it alone
        for dq in dqs:
            target = dq.output[0]
            if target in outputs:
                _rename_tensor(graph, raw, target)
                raw = target
            else:
                _rename_tensor(graph, target, raw)
            graph.node.remove(dq)
        graph.node.remove(q)
    used = {name for n in graph.node for name in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    return out


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
