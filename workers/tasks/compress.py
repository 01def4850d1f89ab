"""Job ``compress``: run a recipe (one or more compression steps) on a stored version and store
the result (every step's result with ``keep_intermediate``) as new versions with lineage,
artifacts and a measured report.

Params (JSON, validated by the API): ``model`` (str), ``version`` (int), ``recipe`` (list of
step configs, ``{"method": ..., ...}``), ``dataset`` (training / calibration dataset id),
``eval_dataset`` (optional id; AP / PCK when it has labels), ``keep_intermediate`` (bool),
``augment_copies`` (int), ``max_crops`` (int or null: person crops taken from the dataset),
``latency_rounds`` (int), ``holdout_fraction`` (float: images held out of every step for the
budget checks and the report's fidelity), ``promote`` (bool: move the ``default`` alias to the
result when it is within budget), ``seed`` (int).

A step over its budget fails the job with the measured numbers (``on_over_budget: fail``) or
is stored with ``report.budget.within_budget`` false and never promoted (``keep``).

Resume: distillation checkpoints and the results of finished recipe steps live in
``<data dir>/work/compress-<job id>/``, which survives a killed worker, so a re-delivered job
skips the steps that finished and continues the current step's training where it stopped.
The folder is removed once the job ends (succeeded, failed or cancelled).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from celery import Task

from model_store import VersionInfo
from model_store.records import DEFAULT
from workers.celery_app import celery_app, task_name
from workers.compression_job import WORK_DONE, prepare_inputs
from workers.runtime import (
    JobCancelled,
    JobContext,
    JobError,
    JobResult,
    job_work_dir,
    run_job,
    transient_errors,
)
from workers.version_pipeline import artifact_bytes

logger = logging.getLogger(__name__)

KIND = "compress"


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
    from pose_core.compression.budget import combined
    from pose_core.compression.pipeline import parse_recipe, run_recipe

    params = ctx.params
    configs = parse_recipe(params["recipe"])
    inputs = prepare_inputs(ctx, work_dir)
    parent = inputs.parent
    if isinstance(inputs.source, OnnxModel) and any(c.method != "quantize" for c in configs):
        raise JobError(
            f"{parent.model} v{parent.number} has no torch form (artifacts 'recipe' + "
            "'weights'): only 'quantize' can run on an ONNX-only version"
        )
    keep = bool(params.get("keep_intermediate", False))
    try:
        results = run_recipe(inputs.source, configs, inputs.data, keep_intermediate=keep)
    except CompressionError as exc:
        ctx.check_cancelled()
        raise JobError(f"compression failed: {exc}") from exc

    # Each stored result is measured against its lineage parent (torch form and ONNX graph).
    against = (inputs.source, artifact_bytes(ctx.store, parent, "model"))
    parent_version = parent
    created: list[VersionInfo] = []
    for index, result in enumerate(results):
        ctx.progress(
            WORK_DONE + (1 - WORK_DONE) * index / len(results),
            f"writing and measuring result {index + 1}/{len(results)}",
            force=True,
        )
        step_reports = result.report.get("steps", [result.report])
        budget = combined([r["budget"] for r in step_reports])
        ready, onnx_bytes = inputs.writer.write(
            result,
            parent=parent_version,
            against=against,
            steps=result.report["lineage"]["recipe"],
            extra={"budget": budget},
            check_cancelled=ctx.check_cancelled,
        )
        created.append(ready)
        parent_version = ready
        against = (result.model, onnx_bytes)
    last = created[-1]
    made = ", ".join(f"v{v.number}" for v in created)
    message = f"created {made} from v{parent.number}"
    if params.get("promote"):
        message += "; " + _promote(ctx, created)
    return JobResult(parent.model, last.number, message)


def _promote(ctx: JobContext, created: list[VersionInfo]) -> str:
    """Move the ``default`` alias to the last version when every step was within budget."""
    last = created[-1]
    over = [v.number for v in created if not (v.report or {})["budget"]["within_budget"]]
    if over:
        return f"not promoted: {', '.join(f'v{n}' for n in over)} over budget"
    ctx.store.models.set_alias(last.model, DEFAULT, last.number)
    return f"'{DEFAULT}' now serves v{last.number}"


@celery_app.task(name=task_name(KIND), bind=True, max_retries=None)
def compress(self: Task, job_id: str) -> None:
    run_job(self, job_id, compress_job)


__all__ = ["KIND", "JobCancelled", "compress", "compress_job"]
