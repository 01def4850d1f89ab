"""Write small ``.tflite`` flatbuffers for tests (the PyPI ``tflite`` package can only read).

Field slots follow the TFLite schema (slot = (vtable offset - 4) / 2 in the generated readers).
Only what the importer tests need: float32/float16 tensors with data, builtin ops with options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import flatbuffers
import numpy as np

# TensorType
FLOAT32, FLOAT16, INT32, INT8 = 0, 1, 2, 9
# BuiltinOperator
ADD, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D = 0, 2, 3, 4
DEQUANTIZE, LOGISTIC, MAX_POOL_2D, RESHAPE, TANH, PAD = 6, 14, 17, 22, 28, 34
# BuiltinOptions
CONV_OPTIONS, DEPTHWISE_OPTIONS, POOL_OPTIONS, CONCAT_OPTIONS, ADD_OPTIONS = 1, 2, 5, 10, 11
RESHAPE_OPTIONS, PAD_OPTIONS = 17, 22
SAME, VALID = 0, 1
NONE, RELU, RELU6 = 0, 1, 3

OptionsWriter = Callable[[flatbuffers.Builder], int]

_NUMPY = {FLOAT32: np.float32, FLOAT16: np.float16, INT32: np.int32, INT8: np.int8}


def _table(builder: flatbuffers.Builder, n_slots: int, ints: dict[int, int],
           offsets: dict[int, int] | None = None, small: dict[int, int] | None = None) -> int:
    builder.StartObject(n_slots)
    for slot, offset in (offsets or {}).items():
        builder.PrependUOffsetTRelativeSlot(slot, offset, 0)
    for slot, value in ints.items():
        builder.PrependInt32Slot(slot, value, -(2**31))  # never equal: always written
    for slot, value in (small or {}).items():
        builder.PrependInt8Slot(slot, value, -128)
    return builder.EndObject()


def conv_options(padding: int, stride: int, activation: int, dilation: int = 1) -> OptionsWriter:
    return lambda b: _table(b, 7, {1: stride, 2: stride, 4: dilation, 5: dilation},
                            small={0: padding, 3: activation})


def depthwise_options(padding: int, stride: int, activation: int,
                      multiplier: int = 1) -> OptionsWriter:
    return lambda b: _table(b, 7, {1: stride, 2: stride, 3: multiplier, 5: 1, 6: 1},
                            small={0: padding, 4: activation})


def pool_options(padding: int, stride: int, size: int) -> OptionsWriter:
    return lambda b: _table(b, 6, {1: stride, 2: stride, 3: size, 4: size},
                            small={0: padding, 5: NONE})


def add_options(activation: int) -> OptionsWriter:
    return lambda b: _table(b, 2, {}, small={0: activation})


def concat_options(axis: int) -> OptionsWriter:
    return lambda b: _table(b, 2, {0: axis}, small={1: NONE})


def empty_options() -> OptionsWriter:
    return lambda b: _table(b, 0, {})


@dataclass
class TinyTflite:
    """Collects tensors and ops, then :meth:`build` returns the flatbuffer bytes."""

    tensors: list[tuple[str, tuple[int, ...], int, int]] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])
    ops: list[tuple[int, tuple[int, ...], tuple[int, ...], int, OptionsWriter | None]] = field(
        default_factory=list)
    opcodes: list[int] = field(default_factory=list)

    def tensor(self, shape: Sequence[int], dtype: int = FLOAT32, data: np.ndarray | None = None,
               name: str | None = None) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype=_NUMPY[dtype]).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name or f"t{len(self.tensors)}", tuple(shape), dtype, buffer))
        return len(self.tensors) - 1

    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int], options_type: int = 0,
           options: OptionsWriter | None = None) -> None:
        if code not in self.opcodes:
            self.opcodes.append(code)
        self.ops.append((self.opcodes.index(code), tuple(inputs), tuple(outputs), options_type,
                         options))

    def build(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        b = flatbuffers.Builder(1024)

        def int_vector(values: Sequence[int]) -> int:
            return b.CreateNumpyVector(np.asarray(values, dtype=np.int32))

        buffers = []
        for data in self.buffers:
            if not data:
                buffers.append(_table(b, 3, {}))
                continue
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head:b.head + len(data)] = data
            buffers.append(_table(b, 3, {}, offsets={0: b.EndVector()}))
        tensors = []
        for name, shape, dtype, buffer in self.tensors:
            name_offset, shape_offset = b.CreateString(name), int_vector(shape)
            tensors.append(_table(b, 8, {2: buffer}, offsets={0: shape_offset, 3: name_offset},
                                  small={1: dtype}))
        operators = []
        for opcode, op_inputs, op_outputs, options_type, options in self.ops:
            in_offset, out_offset = int_vector(op_inputs), int_vector(op_outputs)
            offsets = {1: in_offset, 2: out_offset}
            small = {}
            if options is not None:
                offsets[4] = options(b)
                small[3] = options_type
            operators.append(_table(b, 6, {0: opcode}, offsets=offsets, small=small))
        codes = [_table(b, 4, {2: 1, 3: code}, small={0: min(code, 127)}) for code in self.opcodes]

        def table_vector(items: list[int]) -> int:
            b.StartVector(4, len(items), 4)
            for item in reversed(items):
                b.PrependUOffsetTRelative(item)
            return b.EndVector()

        tensor_vec, op_vec = table_vector(tensors), table_vector(operators)
        in_vec, out_vec = int_vector(inputs), int_vector(outputs)
        subgraph = _table(b, 5, {}, offsets={0: tensor_vec, 1: in_vec, 2: out_vec, 3: op_vec})
        subgraphs, code_vec, buffer_vec = (table_vector([subgraph]), table_vector(codes),
                                           table_vector(buffers))
        model = _table(b, 6, {0: 3}, offsets={1: code_vec, 2: subgraphs, 4: buffer_vec})
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())
