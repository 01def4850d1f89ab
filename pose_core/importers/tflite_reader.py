"""Read a ``.tflite`` flatbuffer (PyPI ``tflite`` package): operators, tensor shapes, constants.

Constants are resolved at read time: raw buffers, ``DEQUANTIZE`` of float16 weights and
``DENSIFY`` of sparse weights all become dense float32 numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# TensorType enum values of the TFLite schema.
_NUMPY_TYPES: dict[int, Any] = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8,
                                4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8,
                                10: np.float64}
# DimensionType: DENSE = 0, SPARSE_CSR = 1. SparseIndexVector: Int32 = 1, Uint16 = 2, Uint8 = 3.
_DENSE, _SPARSE_CSR = 0, 1


class TfliteImportError(ValueError):
    """The file is not a TFLite model this importer understands."""


@dataclass(frozen=True)
class TfliteOp:
    """One operator: its builtin name, input/output tensor indices and raw options table."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Any


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items()
            if not k.startswith("_") and isinstance(v, int)}


def _index_vector(table: Any, kind: int) -> np.ndarray:
    import tflite

    classes = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
    if kind not in classes:
        raise TfliteImportError(f"unsupported sparse index vector type {kind}")
    vector = classes[kind]()
    vector.Init(table.Bytes, table.Pos)
    return np.asarray(vector.ValuesAsNumpy(), dtype=np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """Dense array from TFLite sparse storage (identity traversal order, no block map)."""
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    if order != list(range(len(shape))) or sparsity.BlockMapLength() > 0:
        raise TfliteImportError(f"unsupported sparsity: traversal order {order}, "
                                f"{sparsity.BlockMapLength()} block dims")
    positions = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for level in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(level)
        if meta.Format() == _DENSE:
            size = int(meta.DenseSize())
            positions = (positions[:, None] * size + np.arange(size)).reshape(-1)
            coords = [np.repeat(c, size) for c in coords] + [np.tile(np.arange(size), len(coords[0])
                                                                     if coords else 1)]
        elif meta.Format() == _SPARSE_CSR:
            segments = _index_vector(meta.ArraySegments(), meta.ArraySegmentsType())
            indices = _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())
            starts, ends = segments[positions], segments[positions + 1]
            counts = ends - starts
            positions = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]
                                       ) if len(starts) else np.zeros(0, dtype=np.int64)
            coords = [np.repeat(c, counts) for c in coords] + [indices[positions]]
        else:
            raise TfliteImportError(f"unknown sparse dimension format {meta.Format()}")
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(coords)] = values[positions]
    return dense


class TfliteGraph:
    """The first subgraph of a TFLite model, with constants resolved to numpy arrays."""

    def __init__(self, path: str | Path) -> None:
        import tflite

        self.path = Path(path)
        try:
            data = self.path.read_bytes()
            self._model = tflite.Model.GetRootAsModel(data, 0)
            if self._model.SubgraphsLength() < 1:
                raise TfliteImportError(f"{self.path} has no subgraph")
            self._graph = self._model.Subgraphs(0)
            names = _builtin_names()
            self.ops: list[TfliteOp] = []
            for i in range(self._graph.OperatorsLength()):
                op = self._graph.Operators(i)
                code = self._model.OperatorCodes(op.OpcodeIndex())
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                self.ops.append(TfliteOp(i, names.get(builtin, f"BUILTIN_{builtin}"),
                                         tuple(int(t) for t in op.InputsAsNumpy()),
                                         tuple(int(t) for t in op.OutputsAsNumpy()),
                                         op.BuiltinOptions()))
            self.inputs = tuple(int(self._graph.Inputs(i))
                                for i in range(self._graph.InputsLength()))
            self.outputs = tuple(int(self._graph.Outputs(i))
                                 for i in range(self._graph.OutputsLength()))
        except TfliteImportError:
            raise
        except Exception as exc:  # flatbuffer decoding raises assorted errors on bad input
            raise TfliteImportError(f"{self.path} is not a readable TFLite model: {exc}") from exc
        self.producer = {out: op for op in self.ops for out in op.outputs}
        self._constants: dict[int, np.ndarray | None] = {}

    def shape(self, tensor: int) -> tuple[int, ...]:
        t = self._graph.Tensors(tensor)
        return tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def name(self, tensor: int) -> str:
        return self._graph.Tensors(tensor).Name().decode("utf-8", "replace")

    def is_float32(self, tensor: int) -> bool:
        return int(self._graph.Tensors(tensor).Type()) == 0

    def options(self, op: TfliteOp, cls: Any) -> Any:
        opts = cls()
        opts.Init(op.options.Bytes, op.options.Pos)
        return opts

    def _buffer(self, tensor: int) -> np.ndarray | None:
        t = self._graph.Tensors(tensor)
        buffer = self._model.Buffers(t.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        dtype = _NUMPY_TYPES.get(t.Type())
        if dtype is None:
            raise TfliteImportError(f"tensor {self.name(tensor)}: unsupported type {t.Type()}")
        values = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype)
        if t.Sparsity() is not None:
            return densify(values, self.shape(tensor), t.Sparsity())
        return values.reshape(self.shape(tensor))

    def constant(self, tensor: int) -> np.ndarray | None:
        """The value of a constant tensor (float weights as float32), or None for activations."""
        if tensor not in self._constants:
            value = self._buffer(tensor)
            op = self.producer.get(tensor)
            if value is None and op is not None and op.name in ("DEQUANTIZE", "DENSIFY"):
                value = self.constant(op.inputs[0])
                if value is not None and op.name == "DEQUANTIZE" and value.dtype.kind in "iu":
                    raise TfliteImportError(f"{self.name(tensor)}: integer DEQUANTIZE is not "
                                            "supported (only float16 weights)")
            if value is not None and value.dtype in (np.float16, np.float64):
                value = value.astype(np.float32)
            self._constants[tensor] = value
        return self._constants[tensor]

    def require_constant(self, tensor: int, what: str) -> np.ndarray:
        value = self.constant(tensor)
        if value is None:
            raise TfliteImportError(f"{what} ({self.name(tensor)}) must be a constant tensor")
        return value

    def require_float_constant(self, tensor: int, what: str) -> np.ndarray:
        """A float32 constant (float16 weights are widened); integer (quantized) ones raise."""
        value = self.require_constant(tensor, what)
        if value.dtype != np.float32:
            raise TfliteImportError(f"{what} ({self.name(tensor)}) has type {value.dtype}: only "
                                    "float models are supported (not integer-quantized ones)")
        return value
