"""Upload checks of the formats converted to a torch GraphModel first (``.tflite``, a
state_dict for a known recipe): imported safely, one forward pass, exported to ONNX and that
export checked like an ONNX upload."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pose_core.importers.heatmap_manifest import check_heatmap_outputs
from pose_core.importers.manifest import check_dry_run_shape
from pose_core.importers.onnx_format import inspect_onnx_graph
from pose_core.importers.upload_info import UploadInfo, UploadRejected
from pose_core.manifest_kinds import KIND_BLAZEPOSE, KIND_HEATMAP

LANDMARK_OUTPUTS = ("landmarks", "presence", "heatmap")


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
        kind_manifest = check_heatmap_outputs(info, manifest).manifest
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
