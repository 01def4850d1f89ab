"""Checks a user-uploaded model file before anything is stored.

One handler per format, chosen by file suffix. A handler loads the file safely (never
unpickling arbitrary objects), runs one forward pass on a dummy input and returns an
:class:`UploadInfo`, or raises :class:`UploadRejected` with a human-readable reason.

Adding a format is one function::

    @register_format(".tflite")
    def _inspect_tflite(path: Path, manifest: Mapping[str, Any]) -> UploadInfo: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UploadHandler = Callable[[Path, Mapping[str, Any]], "UploadInfo"]

_HANDLERS: dict[str, UploadHandler] = {}


class UploadRejected(Exception):
    """The upload cannot be used; ``reason`` is shown to the user (HTTP 422)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class UploadInfo:
    format: str
    """Stored as the version's format, e.g. ``onnx``."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    """Output shapes as observed in the dummy forward pass."""
    details: dict[str, Any] = field(default_factory=dict)

    def as_report(self) -> dict[str, Any]:
        def spec(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}

        return {
            "format": self.format,
            "inputs": [spec(t) for t in self.inputs],
            "outputs": [spec(t) for t in self.outputs],
            **self.details,
        }


def register_format(*suffixes: str) -> Callable[[UploadHandler], UploadHandler]:
    """Register ``handler`` for file names ending with any of ``suffixes``."""

    def decorator(handler: UploadHandler) -> UploadHandler:
        for suffix in suffixes:
            _HANDLERS[suffix.lower()] = handler
        return handler

    return decorator


def supported_suffixes() -> list[str]:
    return sorted(_HANDLERS)


def inspect_upload(path: Path, filename: str, manifest: Mapping[str, Any] | None) -> UploadInfo:
    """Validate an uploaded model file; raise UploadRejected with the reason."""
    lowered = filename.lower()
    for suffix in sorted(_HANDLERS, key=len, reverse=True):
        if lowered.endswith(suffix):
            return _HANDLERS[suffix](path, manifest or {})
    raise UploadRejected(
        f"unsupported model file {filename!r}; supported: {', '.join(supported_suffixes())}"
    )


def dummy_shape(
    declared: Sequence[int | str | None], override: Sequence[int] | None, name: str
) -> tuple[int, ...]:
    """Concrete input shape: the manifest's ``input_shape`` if given, else the declared
    shape with symbolic dimensions set to 1 (batch) or from ``input_size`` [H, W]."""
    if override is not None:
        valid = all(isinstance(d, int) and d > 0 for d in override)
        if len(override) != len(declared) or not valid:
            raise UploadRejected(
                f"manifest input_shape {list(override)} does not fit input {name!r} "
                f"of rank {len(declared)}"
            )
        for given, wanted in zip(override, declared, strict=True):
            if isinstance(wanted, int) and wanted > 0 and given != wanted:
                raise UploadRejected(
                    f"manifest input_shape {list(override)} contradicts {list(declared)}"
                )
        return tuple(override)
    shape = []
    for dim in declared:
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        else:
            shape.append(1)
    return tuple(shape)


_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


@register_format(".onnx")
def inspect_onnx(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """ONNX graph: structural check, then one ONNX Runtime forward pass."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UploadRejected(f"not a valid ONNX model: {exc}") from exc
    if any(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.external_data_helper._get_all_tensors(model)
    ):
        # External data would make the server read files named by the upload.
        raise UploadRejected("ONNX models with external data files are not accepted")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        raise UploadRejected(f"not a valid ONNX model: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise UploadRejected(f"ONNX Runtime cannot load the model: {exc}") from exc
    feeds, inputs = dummy_feeds(session, manifest, np.random.default_rng(0))
    try:
        results = session.run(None, feeds)
    except Exception as exc:
        raise UploadRejected(f"forward pass on a dummy input failed: {exc}") from exc
    outputs = tuple(
        TensorSpec(spec.name, tuple(np.shape(value)), str(np.asarray(value).dtype))
        for spec, value in zip(session.get_outputs(), results, strict=True)
    )
    for spec, value in zip(outputs, results, strict=True):
        array = np.asarray(value)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise UploadRejected(f"output {spec.name!r} is not finite on a dummy input")
    return UploadInfo(
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        details={"opset": max((o.version for o in model.opset_import), default=0)},
    )


def dummy_feeds(
    session: Any, manifest: Mapping[str, Any], rng: Any
) -> tuple[dict[str, Any], tuple[TensorSpec, ...]]:
    """Random inputs for an ONNX Runtime session (uniform [0, 1)), shaped from the
    manifest (``input_shape`` for the first input, or ``input_size`` [H, W] for NCHW
    inputs) and the graph's declared shapes."""
    override = manifest.get("input_shape")
    size = manifest.get("input_size")
    feeds: dict[str, Any] = {}
    inputs = []
    for index, spec in enumerate(session.get_inputs()):
        dtype = _ONNX_TYPES.get(spec.type)
        if dtype is None:
            raise UploadRejected(f"input {spec.name!r} has unsupported type {spec.type}")
        declared = list(spec.shape)
        if override is None and size is not None and len(declared) == 4:
            height, width = (size, size) if isinstance(size, int) else size
            declared = [declared[0], declared[1], height, width]
        shape = dummy_shape(declared, override if index == 0 else None, spec.name)
        feeds[spec.name] = rng.random(shape).astype(dtype)
        inputs.append(TensorSpec(spec.name, tuple(_dim(d) for d in spec.shape), dtype))
    return feeds, tuple(inputs)


def _dim(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)
