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

from pose_core.importers.manifest import ManifestRejected, check_dry_run_shape, validated_manifest

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
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Files to store by role when the upload is converted: ``model`` (the ONNX graph that
    serving runs) replaces the upload, which is then kept as role ``source``."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """Manifest keys the handler settled (e.g. ``kind``), merged over the user's."""

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
            try:
                return _HANDLERS[suffix](path, validated_manifest(manifest))
            except ManifestRejected as exc:
                raise UploadRejected(str(exc)) from exc
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


@register_format(".onnx")
def inspect_onnx(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """ONNX graph: structural check, then one ONNX Runtime forward pass. With a heatmap
    manifest (``kind: heatmap`` or ``keypoints`` given) the output must also be N x K x H x W
    heatmaps, one channel per keypoint name (see :func:`heatmap_model_args`)."""
    info = inspect_onnx_graph(path, manifest)
    if manifest.get("kind") == "heatmap" or "keypoints" in manifest:
        return _check_heatmap_outputs(info, manifest)
    return info


def inspect_onnx_graph(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """Any ONNX graph: structural check, then one ONNX Runtime forward pass."""
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


# --------------------------------------------------------------------------- pose formats
#: ``kind`` of the manifest of a servable keypoint model.
KIND_BLAZEPOSE, KIND_HEATMAP = "blazepose", "heatmap"
LANDMARK_OUTPUTS = ("landmarks", "presence", "heatmap")


def heatmap_model_args(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`~pose_core.inference.heatmap.HeatmapModel` from a heatmap
    manifest: ``input_size`` [height, width] (or one int), ``mean``/``std`` (3 values in
    [0, 1] pixel units; default ImageNet's), ``channel_order`` rgb|bgr (default rgb) and
    ``keypoints`` (``coco17`` or the K channel names, which must include the COCO-17 ones).

    Raises:
        UploadRejected: a field is missing or malformed.
    """
    from pose_core.inference.heatmap import HeatmapModelError, coco17_indices

    size = manifest.get("input_size")
    if isinstance(size, int):
        size = [size, size]
    if not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise UploadRejected("a heatmap manifest needs input_size: [height, width]")
    keypoints = manifest.get("keypoints", "coco17")
    if keypoints != "coco17" and not (
        isinstance(keypoints, list) and all(isinstance(k, str) for k in keypoints)
    ):
        raise UploadRejected("manifest keypoints must be 'coco17' or a list of names")
    try:
        coco17_indices(keypoints)
        mean = [float(v) for v in manifest.get("mean", (0.485, 0.456, 0.406))]
        std = [float(v) for v in manifest.get("std", (0.229, 0.224, 0.225))]
    except (HeatmapModelError, TypeError, ValueError) as exc:
        raise UploadRejected(f"bad heatmap manifest: {exc}") from exc
    order = str(manifest.get("channel_order", "rgb")).lower()
    if order not in ("rgb", "bgr") or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UploadRejected("manifest needs channel_order rgb|bgr and 3 mean / 3 positive std")
    return {
        "input_size": (int(size[1]), int(size[0])),
        "mean": mean,
        "std": std,
        "channel_order": order,
        "keypoint_names": keypoints,
    }


def _check_heatmap_outputs(info: UploadInfo, manifest: Mapping[str, Any]) -> UploadInfo:
    args = heatmap_model_args(manifest)
    keypoints = args["keypoint_names"]
    channels = 17 if keypoints == "coco17" else len(keypoints)
    if not info.outputs:
        raise UploadRejected("the model has no output")
    shape = info.outputs[0].shape
    if len(shape) != 4 or shape[1] != channels:
        raise UploadRejected(
            f"a heatmap model's first output must be N x {channels} x H x W "
            f"(one channel per keypoint); got {list(shape)}"
        )
    width, height = args["input_size"]
    image_input = info.inputs[0].shape if len(info.inputs) == 1 else ()
    if len(image_input) != 4 or not (image_input[1] == 3 or isinstance(image_input[1], str)):
        raise UploadRejected("a heatmap model takes one N x 3 x H x W image input")
    return UploadInfo(
        format=info.format,
        inputs=info.inputs,
        outputs=info.outputs,
        details={**info.details, "heatmap": {"size": list(shape[2:]), "input": [height, width]}},
        manifest={
            "kind": KIND_HEATMAP,
            "input_size": [int(height), int(width)],
            "mean": args["mean"],
            "std": args["std"],
            "channel_order": args["channel_order"],
            "keypoints": keypoints,
        },
    )


def _export_checked(model: Any, target: Path, input_shape: tuple[int, ...]) -> UploadInfo:
    """Forward pass of a torch GraphModel on a dummy input, ONNX export, and an ONNX
    Runtime forward pass of the export; the export is the version's ``model`` artifact."""
    import torch

    from pose_core.export import OnnxExportError, export_onnx

    check_dry_run_shape(input_shape, "input")
    try:
        with torch.no_grad():
            outputs = model(torch.rand(input_shape, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:
        raise UploadRejected(f"forward pass on a dummy input failed: {exc}") from exc
    for name, value in zip(model.output_names, outputs, strict=True):
        if not torch.isfinite(value).all():
            raise UploadRejected(f"output {name!r} is not finite on a dummy input")
    try:
        export_onnx(model, target, input_shape)
    except OnnxExportError as exc:
        raise UploadRejected(f"cannot convert the model to ONNX: {exc}") from exc
    return inspect_onnx_graph(target, {"input_shape": list(input_shape)})


def _graph_input_shape(model: Any) -> tuple[int, ...]:
    channels, height, width = (int(d) for d in model.input_spec["shape"])
    return (1, channels, height, width)


@register_format(".tflite")
def inspect_tflite(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """A float ``.tflite``. A BlazePose landmark model is imported with its landmarks,
    presence and heatmap outputs and served like the built-in model (with its detector);
    any other supported graph is converted with all its outputs (serve it by giving a
    heatmap manifest). Stored as the ONNX export (role ``model``), the recipe + weights
    (roles ``recipe``, ``weights``) and the original file."""
    from pose_core.importers.tflite import (
        BLAZEPOSE_DETECTOR,
        BLAZEPOSE_LANDMARK,
        TfliteImportError,
        import_tflite,
    )
    from pose_core.models.graph import save_graph_model

    try:
        model = import_tflite(path)
        family = model.metadata.get("family")
        if family == BLAZEPOSE_LANDMARK.name:
            model = import_tflite(path, outputs=LANDMARK_OUTPUTS)
    except TfliteImportError as exc:
        raise UploadRejected(f"cannot import the TFLite model: {exc}") from exc
    except Exception as exc:  # malformed flatbuffers raise whatever the parser hits
        raise UploadRejected(f"not a readable TFLite model: {exc}") from exc
    if family == BLAZEPOSE_DETECTOR.name:
        raise UploadRejected(
            "this is the BlazePose person detector; upload a pose landmark model "
            "(the built-in detector is used for person boxes)"
        )
    folder = path.parent / "converted"
    info = _export_checked(model, folder / "model.onnx", _graph_input_shape(model))
    recipe, weights = save_graph_model(model, folder)
    kind_manifest: dict[str, Any]
    if family == BLAZEPOSE_LANDMARK.name:
        kind_manifest = {"kind": KIND_BLAZEPOSE, "keypoints": "coco17"}
    elif manifest.get("kind") == KIND_HEATMAP or "keypoints" in manifest:
        kind_manifest = _check_heatmap_outputs(info, manifest).manifest
    else:
        kind_manifest = {}
    return UploadInfo(
        format="onnx",
        inputs=info.inputs,
        outputs=info.outputs,
        details={**info.details, "source_format": "tflite", "family": family},
        artifacts={"model": folder / "model.onnx", "recipe": recipe, "weights": weights},
        manifest={**kind_manifest, "input_shape": list(_graph_input_shape(model))},
    )


def load_state_dict_file(path: Path) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file or a ``.pt`` state_dict read with
    ``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
    import torch

    try:
        if path.name.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # SafetensorError, UnpicklingError, RuntimeError, ...
        raise UploadRejected(f"cannot read the weights safely: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UploadRejected("the file is not a state_dict (a mapping of names to tensors)")
    return state


@register_format(".safetensors", ".pt", ".pth")
def inspect_state_dict(path: Path, manifest: Mapping[str, Any]) -> UploadInfo:
    """A state_dict for a graph recipe: the manifest's ``recipe`` (a GraphModel recipe; the
    service fills it in from the stored model named by ``architecture``, e.g.
    ``blazepose-full``). The weights must match the recipe exactly."""
    from pose_core.models.graph import GraphModel, GraphRecipeError, save_graph_model

    recipe = manifest.get("recipe")
    if not isinstance(recipe, Mapping):
        raise UploadRejected(
            "a state_dict upload needs a manifest naming its architecture, "
            'e.g. {"architecture": "blazepose-full"}'
        )
    state = load_state_dict_file(path)
    try:
        model = GraphModel.from_recipe(recipe, state)
    except GraphRecipeError as exc:
        raise UploadRejected(f"the weights do not fit the architecture: {exc}") from exc
    except Exception as exc:  # shape mismatches surface as RuntimeError/ValueError
        raise UploadRejected(f"the weights do not fit the architecture: {exc}") from exc
    folder = path.parent / "converted"
    info = _export_checked(model, folder / "model.onnx", _graph_input_shape(model))
    recipe_path, weights = save_graph_model(model, folder)
    return UploadInfo(
        format="onnx",
        inputs=info.inputs,
        outputs=info.outputs,
        details={**info.details, "source_format": "state_dict", "tensors": len(state)},
        artifacts={"model": folder / "model.onnx", "recipe": recipe_path, "weights": weights},
        manifest={"input_shape": list(_graph_input_shape(model))},
    )
