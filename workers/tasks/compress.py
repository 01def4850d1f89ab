"""Job ``compress``: run a recipe (one or more compression steps) on a stored version and store
the result (every step's result with ``keep_intermediate``) as new versions with lineage,
artifacts and a measured report.

Params: :class:`common.params.CompressParams` (validated by the API when queueing, read back
here with the same model). The flow: the parent and the crops are loaded from the store
(:func:`workers.compression_io.prepare_inputs`), one pose_core call runs the recipe and writes,
checks and measures each result (:func:`pose_core.compression.results.compress_and_measure`),
and each result is stored as a version (:class:`workers.compression_io.ResultStore`).

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

from celery import Task, shared_task

from common.jobs import COMPRESS, task_name
from common.params import CompressParams
from model_store import VersionInfo
from model_store.records import DEFAULT
from pose_core.roles import ROLE_MODEL
from workers.compression_io import WORK_DONE, prepare_inputs
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

KIND = COMPRESS


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
    from pose_core.compression.base import CompressionError, OnnxModel, StopRequested
    from pose_core.compression.budget import combined
    from pose_core.compression.pipeline import parse_recipe
    from pose_core.compression.registry import onnx_methods
    from pose_core.compression.results import compress_and_measure
    from pose_core.importers.onnx_torch import is_converted_onnx, torch_form_note

    params = ctx.params_as(CompressParams)
    configs = parse_recipe(params.recipe)
    torch_needed = not all(c.runs_on_onnx for c in configs)
    inputs = prepare_inputs(ctx, params, work_dir, torch_needed=torch_needed)
    parent = inputs.parent
    if isinstance(inputs.source, OnnxModel) and torch_needed:
        raise JobError(
            f"{parent.model} v{parent.number} has no torch form (artifacts 'recipe' + "
            f"'weights'): only {', '.join(map(repr, onnx_methods()))} can run on an ONNX-only "
            "version"
        )
    pose = inputs.data.pose
    unusable = [s for c in configs for s in c.landmark_only()]
    if not pose.landmark_outputs and unusable:
        raise JobError(f"{', '.join(unusable)} need BlazePose landmarks, not a {pose.kind} model")

    def on_measure(index: int, total: int) -> None:
        ctx.progress(
            WORK_DONE + (1 - WORK_DONE) * index / total,
            f"writing and measuring result {index + 1}/{total}",
            force=True,
        )

    try:
        measured = compress_and_measure(
            inputs.source,
            artifact_bytes(ctx.store, parent, ROLE_MODEL),
            configs,
            inputs.data,
            ctx.scratch,
            keep_intermediate=params.keep_intermediate,
            accuracy=inputs.results.accuracy,
            on_measure=on_measure,
            started=inputs.started,
        )
    except StopRequested as exc:
        raise JobCancelled(ctx.job.id) from exc
    except CompressionError as exc:
        ctx.stop_if_requested()
        raise JobError(f"compression failed: {exc}") from exc

    torch_form = {}
    if is_converted_onnx(inputs.source):
        torch_form = {"torch_form": torch_form_note(parent.number)}
    # Each result is a child of the one before it (the first: of the parent).
    lineage_parent = parent
    created: list[VersionInfo] = []
    for done in measured:
        report = done.result.report
        budget = combined([r["budget"] for r in report.get("steps", [report])])
        ready = inputs.results.store_result(
            done,
            parent=lineage_parent,
            steps=report["lineage"]["recipe"],
            extra={"budget": budget, **torch_form},
        )
        created.append(ready)
        lineage_parent = ready
    last = created[-1]
    made = ", ".join(f"v{v.number}" for v in created)
    message = f"created {made} from v{parent.number}"
    if params.promote:
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


@shared_task(name=task_name(KIND), bind=True, max_retries=None)
def compress(self: Task, job_id: str) -> None:
    run_job(self, job_id, compress_job)


__all__ = ["KIND", "JobCancelled", "compress", "compress_job"]
