"""A recipe's results as stored versions need them: :func:`compress_and_measure` runs the recipe
(:func:`~pose_core.compression.pipeline.run_recipe`), then writes each result's artifacts,
checks them, and measures it against its lineage parent on the held-out crops
(:func:`~pose_core.compression.measure.measure_candidate`). The caller stores the files and the
reports (the ``compress`` job: as versions; nothing here knows about the store).

Artifacts of a result: ``model`` (the ONNX graph serving runs); ``recipe`` + ``weights``
(``recipe.json`` + ``weights.safetensors``) when the result is still a torch ``GraphModel``, so
later steps (prune, distill, ...) can start from it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pose_core.compression.base import StopRequested
from pose_core.compression.pose_format import BLAZEPOSE_FORMAT, PoseFormat
from pose_core.roles import ROLE_MODEL, ROLE_RECIPE, ROLE_WEIGHTS

if TYPE_CHECKING:
    from pose_core.compression.base import CompressibleModel, CompressionResult
    from pose_core.compression.configs import MethodConfig
    from pose_core.compression.data import CompressionData, CropSet, HeldOut

#: ONNX outputs vs torch outputs of the same weights (float32 exporter differences only).
PARITY_ATOL = 1e-2
VERIFY_CROPS = 4

Accuracy = Callable[[bytes, Path], dict[str, Any]]


class ArtifactCheckError(Exception):
    """A written artifact does not reproduce the model it was written from."""


@dataclass(frozen=True)
class WrittenArtifacts:
    files: dict[str, Path]  #: role -> file
    onnx_bytes: bytes


@dataclass(frozen=True)
class MeasuredResult:
    """One result, written and measured: ``report`` is the version's report (the job adds its
    own fields: dataset, wall time, budget, ...)."""

    result: CompressionResult
    written: WrittenArtifacts
    report: dict[str, Any]


def write_artifacts(
    model: CompressibleModel, folder: Path, input_shape: tuple[int, ...]
) -> WrittenArtifacts:
    """Write the version's files into ``folder`` (see the module docstring)."""
    from pose_core.compression.base import OnnxModel

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    if isinstance(model, OnnxModel):
        onnx_path.write_bytes(model.onnx_bytes)
        return WrittenArtifacts({ROLE_MODEL: onnx_path}, model.onnx_bytes)
    from pose_core.export import export_onnx
    from pose_core.models.graph import GraphModel, save_graph_model

    export_onnx(model, onnx_path, input_shape)
    files = {ROLE_MODEL: onnx_path}
    if isinstance(model, GraphModel):
        recipe, weights = save_graph_model(model, folder)
        files.update({ROLE_RECIPE: recipe, ROLE_WEIGHTS: weights})
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
    if ROLE_RECIPE not in written.files and not _is_torch(model):
        return 0.0
    import torch

    assert isinstance(model, torch.nn.Module)
    with torch.no_grad():
        reference = [t.numpy() for t in _as_tuple(model.eval()(torch.from_numpy(images)))]
    diff = _max_diff(onnx_out, reference)
    if diff > PARITY_ATOL:
        raise ArtifactCheckError(f"ONNX export differs from the torch model by {diff:.3g}")
    if ROLE_RECIPE in written.files:
        from pose_core.models.graph import load_graph_model

        reloaded = load_graph_model(written.files[ROLE_RECIPE].parent)
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


def cached_accuracy(pose: PoseFormat = BLAZEPOSE_FORMAT) -> Accuracy:
    """``gt_box_accuracy`` (graphs decoded as ``pose`` says) memoized on the graph's sha256
    (a chain measures its parents once)."""
    from pose_core.compression.measure import gt_box_accuracy

    cache: dict[tuple[str, Path], dict[str, Any]] = {}

    def accuracy(onnx_bytes: bytes, dataset_dir: Path) -> dict[str, Any]:
        key = (hashlib.sha256(onnx_bytes).hexdigest(), dataset_dir)
        if key not in cache:
            cache[key] = gt_box_accuracy(onnx_bytes, dataset_dir, pose)
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
    held_out: CropSet,
    *,
    eval_dir: Path | None,
    accuracy: Accuracy,
    latency_rounds: int,
    pose: PoseFormat = BLAZEPOSE_FORMAT,
) -> dict[str, Any]:
    """``measure_candidate``'s report of a result against its parent on the held-out crops,
    on graphs already exported (the parent's as stored); params / MACs of an ONNX-only result
    come from the parent's torch form."""
    import torch

    from pose_core.compression.measure import measure_candidate

    source = parent if isinstance(parent, torch.nn.Module) else None
    return measure_candidate(
        model,
        parent,
        held_out,
        eval_dataset_dir=eval_dir,
        source_torch=source,
        accuracy_fn=accuracy,
        latency_rounds=latency_rounds,
        max_fidelity_crops=len(held_out),
        candidate_onnx=onnx_bytes,
        parent_onnx=parent_onnx,
        fidelity_held_out=True,
        pose=pose,
    )


def write_and_measure(
    result: CompressionResult,
    folder: Path,
    against: tuple[CompressibleModel, bytes],
    held_out: HeldOut,
    *,
    eval_dir: Path | None,
    accuracy: Accuracy,
    latency_rounds: int,
    should_stop: Callable[[], bool],
    started: float | None = None,
    pose: PoseFormat = BLAZEPOSE_FORMAT,
) -> MeasuredResult:
    """Write ``result``'s artifacts into ``folder``, check them, and measure the result against
    ``against`` (the lineage parent's model and ONNX bytes) on the held-out crops; with
    ``started`` (a ``time.monotonic()``), the report's ``wall_time_s`` is the time since.

    Raises:
        ArtifactCheckError: the files do not reproduce the model.
        StopRequested: ``should_stop()`` after the check or after measuring.
    """
    from pose_core.compression.pipeline import training_steps

    crops = held_out.crops
    written = write_artifacts(result.model, folder, input_shape_of(crops))
    parity = verify_artifacts(result.model, written, crops)
    _stop_if(should_stop)
    report = measure_result(
        result.model,
        written.onnx_bytes,
        against[0],
        against[1],
        crops,
        eval_dir=eval_dir,
        accuracy=accuracy,
        latency_rounds=latency_rounds,
        pose=pose,
    )
    report["onnx_vs_torch_max_abs_diff"] = parity
    if started is not None:
        report["wall_time_s"] = time.monotonic() - started
    report.update(
        training_steps=training_steps(result.report),
        held_out=held_out.describe(),
        compression=result.report,
    )
    _stop_if(should_stop)
    return MeasuredResult(result, written, report)


def compress_and_measure(
    source: CompressibleModel,
    source_onnx: bytes,
    configs: Sequence[MethodConfig],
    data: CompressionData,
    out_dir: Path,
    *,
    keep_intermediate: bool,
    accuracy: Accuracy,
    on_measure: Callable[[int, int], None] | None = None,
    started: float | None = None,
) -> list[MeasuredResult]:
    """Run the recipe on ``source`` (whose stored ONNX graph is ``source_onnx``), then write and
    measure each result against the one before it (the first against ``source``), in
    ``out_dir/result<i>``. ``data`` needs ``held_out``; ``on_measure(i, n)`` is called before
    result ``i`` of ``n`` is written; ``started``: see :func:`write_and_measure`.

    Raises:
        CompressionError: a step failed or was over its budget (``on_over_budget: fail``).
        ArtifactCheckError, StopRequested: see :func:`write_and_measure`.
    """
    from pose_core.compression.pipeline import run_recipe

    if data.held_out is None:
        raise ValueError("compress_and_measure needs data.held_out")
    results = run_recipe(source, configs, data, keep_intermediate=keep_intermediate)
    against = (source, source_onnx)
    measured: list[MeasuredResult] = []
    for index, result in enumerate(results):
        if on_measure is not None:
            on_measure(index, len(results))
        done = write_and_measure(
            result,
            out_dir / f"result{index}",
            against,
            data.held_out,
            eval_dir=data.eval_dataset_dir,
            accuracy=accuracy,
            latency_rounds=data.latency_rounds,
            should_stop=data.should_stop,
            started=started,
            pose=data.pose,
        )
        measured.append(done)
        against = (result.model, done.written.onnx_bytes)
    return measured


def _stop_if(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise StopRequested("stop requested")
