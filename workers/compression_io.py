"""The store side of the ``compress`` and ``optimize`` jobs: their inputs read from the store
(the parent version, its model, the person detector, training + held-out crops of a stored
dataset -> :class:`~pose_core.compression.data.CompressionData`) and their results stored
(:class:`ResultStore`: a measured result -> a ready version with lineage). Writing, checking
and measuring a result is pose_core's (:mod:`pose_core.compression.results`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.params import CropParams
from model_store import Store, VersionInfo
from model_store.errors import NotServableError
from model_store.lineage import served_version
from pose_core.roles import ROLE_DETECTOR, ROLE_MODEL
from workers.runtime import JobContext, JobError
from workers.version_pipeline import artifact_bytes, has_role, load_compressible

if TYPE_CHECKING:
    from pose_core.compression.base import CompressibleModel
    from pose_core.compression.data import CompressionData, HeldOut
    from pose_core.compression.pose_format import PoseFormat
    from pose_core.compression.results import Accuracy, MeasuredResult

logger = logging.getLogger(__name__)

#: Job progress: crops up to 0.05, the compression work up to 0.8, measuring and storing the rest.
CROPS_DONE, WORK_DONE = 0.05, 0.8


def _cached_accuracy(pose: PoseFormat | None = None) -> Accuracy:
    from pose_core.compression.pose_format import BLAZEPOSE_FORMAT
    from pose_core.compression.results import cached_accuracy

    return cached_accuracy(pose or BLAZEPOSE_FORMAT)


@dataclass
class ResultStore:
    """Stores a job's measured results as versions of ``base.model`` (ready at once: the files
    were checked and measured by pose_core)."""

    store: Store
    job_id: str
    base: VersionInfo  #: the version the job started from
    held_out: HeldOut
    eval_dir: Path | None
    params: CropParams
    accuracy: Accuracy = field(default_factory=_cached_accuracy)

    def store_result(
        self,
        measured: MeasuredResult,
        *,
        parent: VersionInfo,
        steps: list[dict[str, Any]],
        extra: Mapping[str, Any],
    ) -> VersionInfo:
        """The ready version of ``measured`` (child of ``parent``); ``extra`` joins the report."""
        name = self.base.model
        pending = self.store.models.create_pending_version(
            name,
            format="onnx",
            parent=parent.number,
            recipe={
                "steps": steps,
                "base": {"model": name, "version": self.base.number},
                "dataset": self.params.dataset,
                "eval_dataset": self.params.eval_dataset,
            },
            manifest=parent.manifest,
            created_by_job=self.job_id,
        )
        report = {
            **measured.report,
            "dataset": self.params.dataset,
            "eval_dataset": self.params.eval_dataset,
            # the methods applied to each artifact role: compression never touches the person
            # detector, which stays the parent's (fp32) and is shared, not copied
            "compressed_roles": {
                ROLE_MODEL: [str(step["method"]) for step in steps],
                ROLE_DETECTOR: [],
            },
            **extra,
        }
        shared = {}
        if has_role(parent, ROLE_DETECTOR):
            shared = {ROLE_DETECTOR: parent.artifact(ROLE_DETECTOR)}
        return self.store.models.finalize_version(
            name, pending.number, measured.written.files, report=report, shared=shared
        )


@dataclass(frozen=True)
class JobInputs:
    """What the ``compress`` and ``optimize`` jobs start from."""

    parent: VersionInfo
    source: CompressibleModel  #: the parent's torch form, else its ONNX graph
    data: CompressionData
    results: ResultStore
    started: float  #: the job's start (``time.monotonic()``), for ``wall_time_s``


def prepare_inputs(
    ctx: JobContext, params: CropParams, work_dir: Path, *, torch_needed: bool = False
) -> JobInputs:
    """Parent version, its model, the split crops and the result store of a compression job.
    With ``torch_needed``, an uploaded heatmap / SimCC ONNX model is converted to torch
    (``JobError`` when it cannot be); crops and fidelity follow the parent's manifest."""
    from pose_core.compression.crops import training_crops
    from pose_core.compression.data import CompressionData
    from pose_core.compression.pose_format import PoseFormat
    from pose_core.importers.onnx_torch import TorchFormUnavailable
    from pose_core.inference.runtime import OnnxRunner

    started = time.monotonic()
    parent = ctx.store.models.resolve(params.model, params.version)
    try:
        pose = PoseFormat.of_manifest(served_version(ctx.store, parent).manifest)
    except (NotServableError, ValueError) as exc:
        raise JobError(f"{parent.model} v{parent.number}: {exc}") from exc
    try:
        source = load_compressible(
            ctx.store, parent, convert_onnx=torch_needed and not pose.landmark_outputs
        )
    except TorchFormUnavailable as exc:
        raise JobError(f"{parent.model} v{parent.number} has no torch form: {exc}") from exc
    eval_dir = ctx.store.datasets.path(params.eval_dataset) if params.eval_dataset else None
    ctx.progress(0.0, "building training and held-out crops", force=True)
    detector = None
    if has_role(parent, ROLE_DETECTOR):
        detector = OnnxRunner(
            artifact_bytes(ctx.store, parent, ROLE_DETECTOR), ctx.settings.ort_threads
        )
    try:
        crops, held_out = training_crops(
            [ctx.store.datasets.path(dataset) for dataset in params.dataset_ids],
            augment_copies=params.augment_copies,
            seed=params.seed,
            max_sources=params.max_crops,
            detector=detector,
            holdout_fraction=params.holdout_fraction,
            crop_format=pose.crop_format(),
        )
    except ValueError as exc:
        raise JobError(f"dataset {', '.join(params.dataset_ids)}: {exc}") from exc
    ctx.progress(
        CROPS_DONE, f"{len(crops)} training crops, {len(held_out.crops)} held out", force=True
    )
    data = CompressionData(
        train=crops,
        work_dir=work_dir,
        eval_dataset_dir=eval_dir,
        progress=lambda f, m: ctx.progress(CROPS_DONE + (WORK_DONE - CROPS_DONE) * f, m),
        should_stop=ctx.should_stop,
        seed=params.seed,
        held_out=held_out,
        latency_rounds=params.latency_rounds,
        pose=pose,
    )
    results = ResultStore(
        ctx.store, ctx.job.id, parent, held_out, eval_dir, params, _cached_accuracy(pose)
    )
    return JobInputs(parent, source, data, results, started)
