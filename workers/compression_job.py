"""The work of the ``compress`` job, apart from job bookkeeping: training crops from a stored
dataset, the artifacts of a compressed model (written and verified), and its report.

Artifacts of a compressed version: ``model`` (the ONNX graph serving runs); ``recipe`` +
``weights`` (``recipe.json`` + ``weights.safetensors``) when the result is still a torch
``GraphModel``, so later steps (prune, distill, ...) can start from it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_store import Store, VersionInfo
from workers.runtime import JobContext, JobError
from workers.version_pipeline import artifact_bytes, has_role, load_compressible

if TYPE_CHECKING:
    from pose_core.compression.base import CompressibleModel, CompressionResult
    from pose_core.compression.data import CompressionData, CropSet, Detector, HeldOut
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
    holdout_fraction: float,
) -> tuple[CropSet, HeldOut]:
    """Crops of every person of a stored dataset -- ground-truth boxes where labelled,
    detector crops (or whole-image squares without a detector) elsewhere -- split by image
    into training crops (plus augmented copies) and held-out crops."""
    from pose_core.compression.data import AugmentConfig, build_split

    return build_split(
        [dataset_dir],
        holdout_fraction=holdout_fraction,
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
    held_out: CropSet,
    *,
    eval_dir: Path | None,
    accuracy: Callable[[bytes, Path], dict[str, Any]],
    latency_rounds: int,
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
        candidate_onnx=onnx_bytes,
        parent_onnx=parent_onnx,
        fidelity_held_out=True,
    )


@dataclass
class ResultWriter:
    """Stores a job's compression results as versions of ``base.model``: artifacts written
    and verified, measured against the lineage parent on the held-out crops, then ready.
    ``params`` are the job's (``dataset``, ``eval_dataset``, ``latency_rounds``)."""

    store: Store
    job_id: str
    base: VersionInfo  #: the version the job started from
    held_out: HeldOut
    eval_dir: Path | None
    params: Mapping[str, Any]
    scratch: Path
    started: float  #: the job's start (``time.monotonic()``), for ``wall_time_s``
    accuracy: Callable[[bytes, Path], dict[str, Any]] = field(default_factory=cached_accuracy)

    def write(
        self,
        result: CompressionResult,
        *,
        parent: VersionInfo,
        against: tuple[CompressibleModel, bytes],
        steps: list[dict[str, Any]],
        extra: Mapping[str, Any],
        check_cancelled: Callable[[], None],
    ) -> tuple[VersionInfo, bytes]:
        """The ready version of ``result`` (child of ``parent``, measured against ``against``:
        the parent's model and its ONNX bytes) and its ONNX bytes; ``extra`` joins the report."""
        from pose_core.compression.pipeline import training_steps

        name = self.base.model
        pending = self.store.models.create_pending_version(
            name,
            format="onnx",
            parent=parent.number,
            recipe={
                "steps": steps,
                "base": {"model": name, "version": self.base.number},
                "dataset": self.params["dataset"],
                "eval_dataset": self.params.get("eval_dataset"),
            },
            manifest=parent.manifest,
            created_by_job=self.job_id,
        )
        folder = self.scratch / f"v{pending.number}"
        crops = self.held_out.crops
        written = write_artifacts(result.model, folder, input_shape_of(crops))
        parity = verify_artifacts(result.model, written, crops)
        check_cancelled()
        report = measure_result(
            result.model,
            written.onnx_bytes,
            against[0],
            against[1],
            crops,
            eval_dir=self.eval_dir,
            accuracy=self.accuracy,
            latency_rounds=int(self.params.get("latency_rounds", 100)),
        )
        report.update(
            onnx_vs_torch_max_abs_diff=parity,
            wall_time_s=time.monotonic() - self.started,
            training_steps=training_steps(result.report),
            held_out=self.held_out.describe(),
            compression=result.report,
            dataset=self.params["dataset"],
            eval_dataset=self.params.get("eval_dataset"),
            **extra,
        )
        check_cancelled()
        shared = {"detector": parent.artifact("detector")} if has_role(parent, "detector") else {}
        ready = self.store.models.finalize_version(
            name, pending.number, written.files, report=report, shared=shared
        )
        return ready, written.onnx_bytes


@dataclass(frozen=True)
class JobInputs:
    """What the ``compress`` and ``optimize`` jobs start from."""

    parent: VersionInfo
    source: CompressibleModel  #: the parent's torch form, else its ONNX graph
    data: CompressionData
    writer: ResultWriter


#: Job progress: crops up to 0.05, the compression work up to 0.8, measuring and storing the rest.
CROPS_DONE, WORK_DONE = 0.05, 0.8
STOP_PROBE_INTERVAL_S = 1.0


def prepare_inputs(ctx: JobContext, work_dir: Path) -> JobInputs:
    """Parent version, its model, the split crops and the writer of a compression job whose
    params name ``model``, ``version``, ``dataset``, optional ``eval_dataset`` and the crop
    options (``augment_copies``, ``max_crops``, ``holdout_fraction``, ``seed``)."""
    from pose_core.compression.data import CompressionData
    from pose_core.inference.runtime import OnnxRunner

    started = time.monotonic()
    params = ctx.params
    parent = ctx.store.models.resolve(str(params["model"]), int(params["version"]))
    source = load_compressible(ctx.store, parent)
    eval_id = params.get("eval_dataset")
    eval_dir = ctx.store.datasets.path(str(eval_id)) if eval_id else None
    ctx.progress(0.0, "building training and held-out crops", force=True)
    detector = None
    if has_role(parent, "detector"):
        detector = OnnxRunner(
            artifact_bytes(ctx.store, parent, "detector"), ctx.settings.ort_threads
        )
    seed = int(params.get("seed", 0))
    try:
        crops, held_out = training_crops(
            ctx.store.datasets.path(str(params["dataset"])),
            augment_copies=int(params.get("augment_copies", 1)),
            seed=seed,
            max_sources=params.get("max_crops"),
            detector=detector,
            holdout_fraction=float(params.get("holdout_fraction", 0.2)),
        )
    except ValueError as exc:
        raise JobError(f"dataset {params['dataset']}: {exc}") from exc
    ctx.progress(
        CROPS_DONE, f"{len(crops)} training crops, {len(held_out.crops)} held out", force=True
    )
    data = CompressionData(
        train=crops,
        work_dir=work_dir,
        eval_dataset_dir=eval_dir,
        progress=lambda f, m: ctx.progress(CROPS_DONE + (WORK_DONE - CROPS_DONE) * f, m),
        should_stop=_stop_probe(ctx),
        seed=seed,
        held_out=held_out,
        latency_rounds=int(params.get("latency_rounds", 100)),
    )
    writer = ResultWriter(
        ctx.store, ctx.job.id, parent, held_out, eval_dir, params, ctx.scratch, started
    )
    return JobInputs(parent, source, data, writer)


def _stop_probe(ctx: JobContext) -> Callable[[], bool]:
    """``should_stop()`` for compression loops: reads the job row at most once a second."""
    last = [0.0, False]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - float(last[0]) >= STOP_PROBE_INTERVAL_S:
            last[0] = now
            last[1] = ctx.store.jobs.get(ctx.job.id).status == "cancelled"
        return bool(last[1])

    return should_stop
