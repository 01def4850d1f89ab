"""Activation equalization before INT8: per-channel rescaling of ReLU / ReLU6 outputs.

ONNX Runtime quantizes an activation with one scale per tensor, so a channel whose values stay
far below the tensor's range gets only a few of its 256 levels. Where a conv's output goes
through ReLU / ReLU6 into a depthwise conv (MobileNet's expand -> depthwise pair), channel ``c``
can be multiplied by ``s_c`` in the first conv (weights and bias) and divided by it in the
depthwise conv's weights of that channel: the function is unchanged (ReLU is positively
homogeneous) and both convs' per-channel weight quantization is unchanged (each of their output
channels is scaled as a whole), so only the activation's quantization gains (the activation
side of cross-layer equalization, Nagel et al., ICCV 2019).

``s_c`` lifts each channel's calibration maximum to the tensor's range (ReLU6: 6), at most
``max_scale``. Under ReLU6 the clip then falls at the channel's calibration maximum instead of
6, which changes the fp32 function only for values above everything seen in calibration.
Dense consumers (a 1x1 conv reading the channels) are left alone: dividing their input columns
would change their weight quantization (measured worse on BlazePose-Full,
docs/compression-results.md, session 8).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

#: largest factor a channel is lifted by (a channel that is nearly always 0 would otherwise
#: get an unbounded scale from a few stray values)
MAX_SCALE = 64.0
#: crops per ORT call while collecting channel maxima (graphs with a dynamic batch)
_CHUNK = 16


@dataclass(frozen=True)
class _Pair:
    producer: onnx.NodeProto  # Conv writing the channels
    activation: onnx.NodeProto  # Relu or Clip(0, hi)
    consumer: onnx.NodeProto  # depthwise Conv reading them
    ceiling: float | None  # the Clip's upper bound; None for Relu


def equalize_activations(
    model: onnx.ModelProto, crops: np.ndarray, max_scale: float = MAX_SCALE
) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every conv -> ReLU/ReLU6 -> depthwise conv pair equalized on
    ``crops`` (see the module docstring), and how many pairs were changed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    pairs = _find_pairs(out)
    if not pairs:
        return out, 0
    maxima = _channel_maxima(out, [p.activation.output[0] for p in pairs], crops)
    weights = {init.name: init for init in out.graph.initializer}
    for pair in pairs:
        peak = maxima[pair.activation.output[0]]
        target = pair.ceiling if pair.ceiling is not None else float(peak.max())
        scale = np.clip(target / np.maximum(peak, target / max_scale), 1.0, max_scale)
        _scale_rows(weights, pair.producer, scale)
        _scale_rows(weights, pair.consumer, 1.0 / scale, bias=False)
    logger.info("activation equalization: %d conv pairs", len(pairs))
    return out, len(pairs)


def _find_pairs(model: onnx.ModelProto) -> list[_Pair]:
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}

    def only_consumer(tensor: str) -> onnx.NodeProto | None:
        found = consumers.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in graph_outputs else None

    def scalar(name: str) -> float | None:
        if name in weights:
            value = numpy_helper.to_array(weights[name])
        elif name in constants:
            value = numpy_helper.to_array(constants[name].attribute[0].t)
        else:
            return None
        return float(value) if value.size == 1 else None

    def owns_weights(conv: onnx.NodeProto) -> bool:
        names = conv.input[1:3]
        return all(n in weights and len(consumers[n]) == 1 for n in names if n)

    pairs = []
    for node in graph.node:
        if node.op_type != "Conv" or not owns_weights(node):
            continue
        activation = only_consumer(node.output[0])
        if activation is None:
            continue
        if activation.op_type == "Relu":
            ceiling = None
        elif activation.op_type == "Clip" and len(activation.input) == 3:
            low, ceiling = scalar(activation.input[1]), scalar(activation.input[2])
            if low != 0.0 or ceiling is None or ceiling <= 0:
                continue
        else:
            continue
        consumer = only_consumer(activation.output[0])
        if (
            consumer is None
            or consumer.op_type != "Conv"
            or consumer.input[0] != activation.output[0]
            or not owns_weights(consumer)
        ):
            continue
        w = weights[consumer.input[1]]
        channels = weights[node.input[1]].dims[0]
        if _group(consumer) != channels or list(w.dims[:2]) != [channels, 1]:
            continue  # not depthwise over these channels
        pairs.append(_Pair(node, activation, consumer, ceiling))
    return pairs


def _group(conv: onnx.NodeProto) -> int:
    for attr in conv.attribute:
        if attr.name == "group":
            return int(helper.get_attribute_value(attr))
    return 1


def _scale_rows(
    weights: dict[str, onnx.TensorProto], conv: onnx.NodeProto, scale: np.ndarray, bias: bool = True
) -> None:
    """Multiply output channel c of ``conv`` (weights, and bias when ``bias``) by ``scale[c]``."""
    names = [conv.input[1]] + ([conv.input[2]] if bias and len(conv.input) > 2 else [])
    for name in names:
        if not name:
            continue
        array = numpy_helper.to_array(weights[name])
        shape = (-1,) + (1,) * (array.ndim - 1)
        scaled = (array * scale.reshape(shape)).astype(array.dtype)
        weights[name].CopyFrom(numpy_helper.from_array(scaled, name))


def _channel_maxima(
    model: onnx.ModelProto, tensors: list[str], crops: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-channel maximum of each of ``tensors`` (N, C, H, W) over ``crops``."""
    from pose_core.compression.quantize_mixed import session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    runner = session(probe.SerializeToString())
    first = runner.get_inputs()[0]  # type: ignore[attr-defined]
    chunk = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else _CHUNK
    maxima: dict[str, np.ndarray] = {}
    for start in range(0, len(crops), chunk):
        batch = np.ascontiguousarray(crops[start : start + chunk], dtype=np.float32)
        values = runner.run(tensors, {first.name: batch})  # type: ignore[attr-defined]
        for name, value in zip(tensors, values, strict=True):
            peak = np.asarray(value).max(axis=(0, 2, 3))
            maxima[name] = peak if name not in maxima else np.maximum(maxima[name], peak)
    return maxima
