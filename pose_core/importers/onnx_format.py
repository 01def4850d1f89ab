"""Upload check of an ONNX graph: structural check, one ONNX Runtime forward pass on dummy
inputs shaped from the manifest and the graph, and the pose outputs the manifest names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pose_core.importers.heatmap_manifest import check_heatmap_outputs
from pose_core.importers.manifest import check_dry_run_shape
from pose_core.importers.upload_info import TensorSpec, UploadInfo, UploadRejected
from pose_core.manifest_kinds import KIND_HEATMAP, KIND_SIMCC


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
        return check_dry_run_shape(override, name)
    shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in declared]
    return check_dry_run_shape(shape, name)


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


def inspect_onnx(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """ONNX graph: structural check, then one ONNX Runtime forward pass. With a heatmap
    manifest (``kind: heatmap`` or ``keypoints`` given) the output must also be N x K x H x W
    heatmaps, one channel per keypoint name (see :mod:`pose_core.importers.heatmap_manifest`);
    with ``kind: simcc``, SimCC outputs (see :mod:`pose_core.importers.simcc_manifest`)."""
    info = inspect_onnx_graph(path, manifest)
    if manifest.get("kind") == KIND_SIMCC:
        from pose_core.importers.simcc_manifest import check_simcc_outputs

        return check_simcc_outputs(info, manifest)
    if manifest.get("kind") == KIND_HEATMAP or "keypoints" in manifest:
        return check_heatmap_outputs(info, manifest)
    return info


def inspect_onnx_graph(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """Any ONNX graph: structural check, then one ONNX Runtime forward pass."""
    import numpy as np
    import onnx

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
    from pose_core.inference.runtime import ort_session

    try:
        session = ort_session(path, 1, spin=None)
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
