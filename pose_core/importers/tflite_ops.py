"""TFLite ops -> graph nodes of real torch layers (:class:`GraphBuilder`): convolutions as
``nn.Conv2d`` with NHWC weights transposed to NCHW, TF "SAME" padding as conv padding or an
explicit zero pad, and the other supported ops (listed in :mod:`pose_core.importers.tflite`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pose_core.importers.tflite_reader import TfliteGraph, TfliteImportError, TfliteOp
from pose_core.models.graph import INPUT_TENSOR, Node
from pose_core.models.layers import ChannelPad, DepthToSpace

logger = logging.getLogger(__name__)


_SAME, _VALID = 0, 1  #: TFLite Padding enum
_ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}


# NHWC axis -> NCHW axis for 4-D tensors.
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class GraphBuilder:
    """Translates TFLite ops, in order, into GraphModel nodes and layers."""

    def __init__(self, graph: TfliteGraph) -> None:
        self.graph = graph
        self.layers: dict[str, nn.Module] = {}
        self.nodes: list[Node] = []
        self._names: dict[int, str] = {graph.inputs[0]: INPUT_TENSOR}
        self._handlers: dict[str, Callable[[TfliteOp], None]] = {
            "CONV_2D": self._conv,
            "DEPTHWISE_CONV_2D": self._conv,
            "ADD": self._add,
            "PAD": self._pad,
            "PADV2": self._pad,
            "RESIZE_BILINEAR": self._resize_bilinear,
            "MAX_POOL_2D": self._max_pool,
            "RESHAPE": self._reshape,
            "LOGISTIC": self._logistic,
            "CONCATENATION": self._concat,
            "DEPTH_TO_SPACE": self._depth_to_space,
        }

    # -- helpers ----------------------------------------------------------------------------

    def tensor(self, index: int) -> str:
        if index not in self._names:
            if self.graph.constant(index) is not None:
                raise TfliteImportError(f"constant tensor {self.graph.name(index)} used as an "
                                        "activation input is not supported")
            raise TfliteImportError(f"tensor {self.graph.name(index)} is read before it is made")
        return self._names[index]

    def emit(self, op: TfliteOp, kind: str, inputs: Sequence[int], *, module: str | None = None,
             params: dict[str, Any] | None = None, source: str | None = None) -> None:
        if not self.graph.is_float32(op.outputs[0]):
            raise TfliteImportError(f"{op.name} (op #{op.index}) computes a non-float32 tensor: "
                                    "only float models are supported")
        output = f"t{op.outputs[0]}"
        self._names[op.outputs[0]] = output
        input_names = (source,) if source is not None else tuple(self.tensor(i) for i in inputs)
        self.nodes.append(Node(kind, input_names, output, module, params or {}))

    def convert(self, op: TfliteOp) -> None:
        if op.name in ("DEQUANTIZE", "DENSIFY"):
            self.graph.require_constant(op.outputs[0], f"{op.name} output")
            return
        handler = self._handlers.get(op.name)
        if handler is None:
            raise TfliteImportError(f"unsupported TFLite op {op.name} (op #{op.index}); supported:"
                                    f" {sorted([*self._handlers, 'DEQUANTIZE', 'DENSIFY'])}")
        handler(op)

    def _fusable_pad(self, tensor: int) -> tuple[int, int, int] | None:
        """(source tensor, pad_h, pad_w) if ``tensor`` is a symmetric spatial zero PAD."""
        op = self.graph.producer.get(tensor)
        if op is None or op.name != "PAD":
            return None
        pads = self.graph.require_constant(op.inputs[1], "PAD paddings").reshape(-1, 2)
        if pads.shape[0] != 4 or pads[0].any() or pads[3].any():
            return None
        (top, bottom), (left, right) = pads[1], pads[2]
        if top != bottom or left != right:
            return None
        return op.inputs[0], int(top), int(left)

    # -- ops --------------------------------------------------------------------------------

    def _conv(self, op: TfliteOp) -> None:
        import tflite

        depthwise = op.name == "DEPTHWISE_CONV_2D"
        opts = self.graph.options(
            op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        weight = self.graph.require_float_constant(op.inputs[1], f"{op.name} weights")
        bias = (self.graph.require_float_constant(op.inputs[2], f"{op.name} bias")
                if len(op.inputs) > 2 and op.inputs[2] >= 0 else None)
        _, height, width, in_channels = self.graph.shape(op.inputs[0])
        if depthwise:
            _, kh, kw, out_channels = weight.shape
            torch_weight = weight.reshape(kh, kw, out_channels).transpose(2, 0, 1)[:, None]
            groups = in_channels
        else:
            out_channels, kh, kw, per_group = weight.shape
            torch_weight = weight.transpose(0, 3, 1, 2)
            groups = in_channels // per_group
        stride = (int(opts.StrideH()), int(opts.StrideW()))
        dilation = (int(opts.DilationHFactor()), int(opts.DilationWFactor()))

        source_tensor, padding, pre_pad = op.inputs[0], (0, 0), None
        if opts.Padding() == _SAME:
            pad_h = _same_padding(height, kh, stride[0], dilation[0])
            pad_w = _same_padding(width, kw, stride[1], dilation[1])
            if pad_h[0] == pad_h[1] and pad_w[0] == pad_w[1]:
                padding = (pad_h[0], pad_w[0])
            else:
                pre_pad = [pad_w[0], pad_w[1], pad_h[0], pad_h[1]]
        else:
            fused = self._fusable_pad(op.inputs[0])
            if fused is not None:
                source_tensor, padding = fused[0], (fused[1], fused[2])

        conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias is not None)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.array(torch_weight, dtype=np.float32)))
            if bias is not None and conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32).reshape(-1)))
        name = f"{'dwconv' if depthwise else 'conv'}_{op.index}"
        self.layers[name] = conv
        params: dict[str, Any] = {"activation": _ACTIVATIONS[opts.FusedActivationFunction()]}
        if pre_pad is not None:
            params["pad"] = pre_pad
        self.emit(op, "conv", [source_tensor], module=name, params=params)

    def _add(self, op: TfliteOp) -> None:
        import tflite

        opts = self.graph.options(op, tflite.AddOptions)
        self.emit(op, "add", op.inputs[:2],
                  params={"activation": _ACTIVATIONS[opts.FusedActivationFunction()]})

    def _pad(self, op: TfliteOp) -> None:
        if op.name == "PADV2" and len(op.inputs) > 2:
            value = self.graph.require_constant(op.inputs[2], "PADV2 value")
            if np.any(value != 0):
                raise TfliteImportError("PADV2 with a non-zero value is not supported")
        pads = self.graph.require_constant(op.inputs[1], "PAD paddings").reshape(-1, 2)
        if pads.shape[0] != 4:
            raise TfliteImportError(f"PAD of a rank-{pads.shape[0]} tensor is not supported")
        if pads[0].any():
            raise TfliteImportError("PAD on the batch axis is not supported")
        (top, bottom), (left, right), (before, after) = pads[1], pads[2], pads[3]
        spatial = [int(left), int(right), int(top), int(bottom)]
        if not (before or after):
            self.emit(op, "pad", op.inputs[:1], params={"pad": spatial})
            return
        name = f"chpad_{op.index}"
        self.layers[name] = ChannelPad(int(before), int(after))
        params = {"pad": spatial} if any(spatial) else {}
        self.emit(op, "channel_pad", op.inputs[:1], module=name, params=params)

    def _resize_bilinear(self, op: TfliteOp) -> None:
        import tflite

        opts = self.graph.options(op, tflite.ResizeBilinearOptions)
        if opts.AlignCorners() or not opts.HalfPixelCenters():
            raise TfliteImportError("RESIZE_BILINEAR is supported with half_pixel_centers=True "
                                    "and align_corners=False only")
        _, height, width, _ = self.graph.shape(op.outputs[0])
        self.emit(op, "resize_bilinear", op.inputs[:1], params={"size": [height, width]})

    def _max_pool(self, op: TfliteOp) -> None:
        import tflite

        opts = self.graph.options(op, tflite.Pool2DOptions)
        if opts.FusedActivationFunction():
            raise TfliteImportError("MAX_POOL_2D with a fused activation is not supported")
        kernel = [int(opts.FilterHeight()), int(opts.FilterWidth())]
        stride = [int(opts.StrideH()), int(opts.StrideW())]
        pad = [0, 0, 0, 0]
        if opts.Padding() == _SAME:
            _, height, width, _ = self.graph.shape(op.inputs[0])
            pad_h = _same_padding(height, kernel[0], stride[0], 1)
            pad_w = _same_padding(width, kernel[1], stride[1], 1)
            pad = [pad_w[0], pad_w[1], pad_h[0], pad_h[1]]
        self.emit(op, "max_pool", op.inputs[:1],
                  params={"kernel": kernel, "stride": stride, "pad": pad})

    def _reshape(self, op: TfliteOp) -> None:
        shape = self.graph.shape(op.outputs[0])
        if len(op.inputs) > 1:
            given = self.graph.constant(op.inputs[1])
            if given is not None:
                shape = tuple(int(s) for s in given.reshape(-1))
        self.emit(op, "reshape", op.inputs[:1], params={"shape": list(shape)})

    def _logistic(self, op: TfliteOp) -> None:
        self.emit(op, "sigmoid", op.inputs[:1])

    def _concat(self, op: TfliteOp) -> None:
        import tflite

        opts = self.graph.options(op, tflite.ConcatenationOptions)
        rank = len(self.graph.shape(op.outputs[0]))
        axis = int(opts.Axis()) % rank
        if rank == 4:
            axis = _NHWC_TO_NCHW_AXIS[axis]
        self.emit(op, "concat", op.inputs, params={
            "axis": axis, "activation": _ACTIVATIONS[opts.FusedActivationFunction()]})

    def _depth_to_space(self, op: TfliteOp) -> None:
        import tflite

        opts = self.graph.options(op, tflite.DepthToSpaceOptions)
        name = f"d2s_{op.index}"
        self.layers[name] = DepthToSpace(int(opts.BlockSize()))
        self.emit(op, "depth_to_space", op.inputs[:1], module=name)
