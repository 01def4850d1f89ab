"""Job ``compress``: run a recipe (one or more compression steps) on a stored version and store
the result (every step's result with ``keep_intermediate``) as new versions with lineage,
artifacts and a measured report.

Params (JSON, validated by the API): ``model`` (str), ``version`` (int), ``recipe`` (list of
step configs, ``{"method": ..., ...}``), ``dataset`` (training / calibration dataset id),
``eval_dataset`` (optional id; AP / PCK when it has labels), ``keep_intermediate`` (bool),
``augment_copies`` (int), ``max_crops`` (int or null: person crops taken from the dataset),
``latency_rounds`` (int), ``seed`` (int).

Resume: distillation checkpoints and the results of finished recipe steps live in
``<data dir>/work/compress-<job id>/``, which survives a killed worker, so a re-delivered job
skips the steps that finished and continues the current step's training where it stopped.
The folder is removed once the job ends (succeeded, failed or cancelled).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from celery import Task

from model_store import VersionInfo
from workers.celery_app import celery_app, task_name
from workers.compression_job import (
    cached_accuracy,
    input_shape_of,
    measure_result,
    training_crops,
    verify_artifacts,
    write_artifacts,
)
from workers.runtime import (
    JobCancelled,
    JobContext,
    JobError,
    JobResult,
    job_work_dir,
    run_job,
    transient_errors,
)
from workers.version_pipeline import artifact_bytes, has_role, load_compressible

logger = logging.getLogger(__name__)

KIND = "compress"
#: Job progress: crops up to 0.05, the recipe up to 0.8, measuring and storing the rest.
CROPS_DONE, RECIPE_DONE = 0.05, 0.8
STOP_PROBE_INTERVAL_S = 1.0


def work_dir_of(ctx: JobContext) -> Path:
    """Per-job folder that outlives an attempt (checkpoints for resume)."""
    return job_work_dir(ctx.store, KIND, ctx.job.id)


def compress_job(ctx: JobContext) -> JobResult:
    work_dir = work_dir_of(ctx)
    try:
        result = _run(ctx, work_dir)
    except transient_errors():
        raise  # retried: keep the checkpoints
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


def _run(ctx: JobContext, work_dir: Path) -> JobResult:
    from pose_core.compression.base import CompressionError, OnnxModel
    from pose_core.compression.data import CompressionData
    from pose_core.compression.pipeline import parse_recipe, run_recipe
    from pose_core.inference.runtime import OnnxRunner

    started = time.monotonic()
    params = ctx.params
    name = str(params["model"])
    parent = ctx.store.models.resolve(name, int(params["version"]))
    configs = parse_recipe(params["recipe"])
    source = load_compressible(ctx.store, parent)
    if isinstance(source, OnnxModel) and any(c.method != "quantize" for c in configs):
        raise JobError(
            f"{name} v{parent.number} has no torch form (artifacts 'recipe' + 'weights'): "
            "only 'quantize' can run on an ONNX-only version"
        )
    train_dir = ctx.store.datasets.path(str(params["dataset"]))
    eval_id = params.get("eval_dataset")
    eval_dir = ctx.store.datasets.path(str(eval_id)) if eval_id else None

    ctx.progress(0.0, "building training crops", force=True)
    detector = None
    if has_role(parent, "detector"):
        detector_onnx = artifact_bytes(ctx.store, parent, "detector")
        detector = OnnxRunner(detector_onnx, ctx.settings.ort_threads)
    crops = training_crops(
        train_dir,
        augment_copies=int(params.get("augment_copies", 1)),
        seed=int(params.get("seed", 0)),
        max_sources=params.get("max_crops"),
        detector=detector,
    )
    ctx.progress(CROPS_DONE, f"{len(crops)} training crops", force=True)

    data = CompressionData(
        train=crops,
        work_dir=work_dir,
        eval_dataset_dir=eval_dir,
        progress=lambda f, m: ctx.progress(CROPS_DONE + (RECIPE_DONE - CROPS_DONE) * f, m),
        should_stop=_stop_probe(ctx),
        seed=int(params.get("seed", 0)),
    )
    keep = bool(params.get("keep_intermediate", False))
    try:
        results = run_recipe(source, configs, data, keep_intermediate=keep)
    except CompressionError as exc:
        ctx.check_cancelled()
        raise JobError(f"compression failed: {exc}") from exc

    # Each stored result is measured against its lineage parent (torch form and ONNX graph).
    against_model: Any = source
    against_onnx = artifact_bytes(ctx.store, parent, "model")
    accuracy = cached_accuracy()
    parent_version = parent
    created: list[VersionInfo] = []
    for index, result in enumerate(results):
        ctx.progress(
            RECIPE_DONE + (1 - RECIPE_DONE) * index / len(results),
            f"writing and measuring result {index + 1}/{len(results)}",
            force=True,
        )
        step_configs = result.report.get("lineage", {}).get("recipe") or [
            c.model_dump(mode="json") for c in configs
        ]
        pending = ctx.store.models.create_pending_version(
            name,
            format="onnx",
            parent=parent_version.number,
            recipe={
                "steps": step_configs,
                "base": {"model": name, "version": parent.number},
                "dataset": params["dataset"],
                "eval_dataset": eval_id,
            },
            manifest=parent.manifest,
            created_by_job=ctx.job.id,
        )
        folder = ctx.scratch / f"result{index}"
        written = write_artifacts(result.model, folder, input_shape_of(crops))
        parity = verify_artifacts(result.model, written, crops)
        ctx.check_cancelled()
        report = measure_result(
            result.model,
            written.onnx_bytes,
            against_model,
            against_onnx,
            crops,
            eval_dir=eval_dir,
            accuracy=accuracy,
            latency_rounds=int(params.get("latency_rounds", 100)),
        )
        report.update(
            onnx_vs_torch_max_abs_diff=parity,
            wall_time_s=time.monotonic() - started,
            compression=result.report,
            dataset=params["dataset"],
            eval_dataset=eval_id,
        )
        ctx.check_cancelled()
        shared = {"detector": parent.artifact("detector")} if has_role(parent, "detector") else {}
        ready = ctx.store.models.finalize_version(
            name, pending.number, written.files, report=report, shared=shared
        )
        created.append(ready)
        parent_version = ready
        against_model, against_onnx = result.model, written.onnx_bytes
    last = created[-1]
    made = ", ".join(f"v{v.number}" for v in created)
    return JobResult(name, last.number, f"created {made} from v{parent.number}")


def _stop_probe(ctx: JobContext) -> Any:
    """``should_stop()`` for compression loops: reads the job row at most once a second."""
    last = [0.0, False]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - float(last[0]) >= STOP_PROBE_INTERVAL_S:
            last[0] = now
            last[1] = ctx.store.jobs.get(ctx.job.id).status == "cancelled"
        return bool(last[1])

    return should_stop


@celery_app.task(name=task_name(KIND), bind=True, max_retries=None)
def compress(self: Task, job_id: str) -> None:
    run_job(self, job_id, compress_job)


__all__ = ["KIND", "JobCancelled", "compress", "compress_job"]
