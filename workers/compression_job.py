"""The work of the ``compress`` job, apart from job bookkeeping: training crops from a stored
dataset, the artifacts of a compressed model (written and verified), and its report.

Artifacts of a compressed version: ``model`` (the ONNX graph serving runs); ``recipe`` +
``weights`` (``recipe.json`` + ``weights.safetensors``) when the result is still a torch
``GraphModel``, so later steps (prune, distill, ...) can start from it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pose_core.compression.base import CompressibleModel
    from pose_core.compression.data import CropSet, Detector
    from pose_core.inference.types import Runner

logger = logging.getLogger(__name__)

#: ONNX outputs vs torch outputs of the same weights (float32 exporter differences only).
PARITY_ATOL = 1e-2
VERIFY_CROPS = 4


class ArtifactCheckError(Exception):
    """A written artifact does not reproduce the model it was written from."""


@dataclass(frozen=True)
class WrittenArtifacts:
    files: dict[str, Path]  #: role -> file
    onnx_bytes: bytes


def detector_crops(runner: Runner) -> Detector:
    """An image -> person crops function from a BlazePose detector runner."""
    from pose_core.inference.detector import detect_people
    from pose_core.inference.roi import rois_from_detections

    def detect(image: np.ndarray) -> list[Any]:
        detections = detect_people(runner, image)
        return list(rois_from_detections(detections.keypoints[:10]))

    return detect


def training_crops(
    dataset_dir: Path,
    *,
    augment_copies: int,
    seed: int,
    max_sources: int | None,
    detector: Runner | None,
) -> CropSet:
    """Crops of every person of a stored dataset: ground-truth boxes where labelled, detector
    crops (or whole-image squares without a detector) elsewhere, plus augmented copies."""
    from pose_core.compression.data import AugmentConfig, build_cropset

    return build_cropset(
        [dataset_dir],
        augment=AugmentConfig(copies=augment_copies) if augment_copies > 0 else None,
        seed=seed,
        detect=detector_crops(detector) if detector is not None else None,
        max_sources=max_sources,
    )


def write_artifacts(
    model: CompressibleModel, folder: Path, input_shape: tuple[int, ...]
) -> WrittenArtifacts:
    """Write the version's files into ``folder`` (see the module docstring)."""
    from pose_core.compression.base import OnnxModel

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    if isinstance(model, OnnxModel):
        onnx_path.write_bytes(model.onnx_bytes)
        return WrittenArtifacts({"model": onnx_path}, model.onnx_bytes)
    from pose_core.export import export_onnx
    from pose_core.models.graph import GraphModel, save_graph_model

    export_onnx(model, onnx_path, input_shape)
    files = {"model": onnx_path}
    if isinstance(model, GraphModel):
        recipe, weights = save_graph_model(model, folder)
        files.update(recipe=recipe, weights=weights)
    return WrittenArtifacts(files, onnx_path.read_bytes())


def verify_artifacts(model: CompressibleModel, written: WrittenArtifacts, crops: CropSet) -> float:
    """Reload what was written and check it reproduces ``model`` on a few crops: the ONNX graph
    runs and gives finite outputs (matching torch within :data:`PARITY_ATOL` for torch models),
    and ``recipe`` + ``weights`` rebuild the same torch model. Returns the ONNX-vs-torch max
    absolute difference (0 for ONNX-only models)."""
    from pose_core.compression.measure import ort_session, run_session

    images = crops.images[:VERIFY_CROPS]
    onnx_out = run_session(ort_session(written.onnx_bytes), images)
    if not all(np.isfinite(out).all() for out in onnx_out):
        raise ArtifactCheckError("the ONNX graph gives non-finite outputs")
    if "recipe" not in written.files and not _is_torch(model):
        return 0.0
    import torch

    assert isinstance(model, torch.nn.Module)
    with torch.no_grad():
        reference = [t.numpy() for t in _as_tuple(model.eval()(torch.from_numpy(images)))]
    diff = _max_diff(onnx_out, reference)
    if diff > PARITY_ATOL:
        raise ArtifactCheckError(f"ONNX export differs from the torch model by {diff:.3g}")
    if "recipe" in written.files:
        from pose_core.models.graph import load_graph_model

        reloaded = load_graph_model(written.files["recipe"].parent)
        with torch.no_grad():
            again = [t.numpy() for t in _as_tuple(reloaded(torch.from_numpy(images)))]
        if _max_diff(again, reference) > 1e-5:
            raise ArtifactCheckError("recipe + weights do not rebuild the same model")
    return diff


def _is_torch(model: object) -> bool:
    import torch

    return isinstance(model, torch.nn.Module)


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return tuple(out) if isinstance(out, list | tuple) else (out,)


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b):
        raise ArtifactCheckError(f"{len(a)} ONNX outputs for {len(b)} torch outputs")
    pairs = zip(a, b, strict=True)
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max(initial=0.0)) for x, y in pairs)


def cached_accuracy() -> Callable[[bytes, Path], dict[str, Any]]:
    """``gt_box_accuracy`` memoized on the graph's sha256 (a chain measures its parents once)."""
    from pose_core.compression.measure import gt_box_accuracy

    cache: dict[tuple[str, Path], dict[str, Any]] = {}

    def accuracy(onnx_bytes: bytes, dataset_dir: Path) -> dict[str, Any]:
        key = (hashlib.sha256(onnx_bytes).hexdigest(), dataset_dir)
        if key not in cache:
            cache[key] = gt_box_accuracy(onnx_bytes, dataset_dir)
        return cache[key]

    return accuracy


def input_shape_of(crops: CropSet) -> tuple[int, ...]:
    """Batch-1 input shape: the crops' shape (the landmark model's input)."""
    return (1, *crops.images.shape[1:])


def measure_result(
    model: CompressibleModel,
    onnx_bytes: bytes,
    parent: CompressibleModel,
    parent_onnx: bytes,
    crops: CropSet,
    *,
    eval_dir: Path | None,
    accuracy: Callable[[bytes, Path], dict[str, Any]],
    latency_rounds: int,
) -> dict[str, Any]:
    """``measure_candidate``'s report of a result against its parent, on graphs already
    exported (the parent's as stored); params / MACs of an ONNX-only result come from the
    parent's torch form."""
    import torch

    from pose_core.compression.measure import measure_candidate

    source = parent if isinstance(parent, torch.nn.Module) else None
    return measure_candidate(
        model,
        parent,
        crops,
        eval_dataset_dir=eval_dir,
        source_torch=source,
        accuracy_fn=accuracy,
        latency_rounds=latency_rounds,
        candidate_onnx=onnx_bytes,
        parent_onnx=parent_onnx,
    )
