"""Job ``optimize``: candidates across techniques within a time budget
(:func:`pose_core.compression.optimize.optimize`), the Pareto-optimal ones that meet the target
stored as versions (children of the source, with reports), the whole table in the source
version's report under ``optimize.<job id>``, the recommended version as the job's result.

Params: :class:`common.params.OptimizeParams` (validated by the API, read back here with the
same model).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from common.jobs import OPTIMIZE, task_name
from common.params import OptimizeParams
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
from workers.version_pipeline import artifact_bytes, has_torch_form

logger = logging.getLogger(__name__)

KIND = OPTIMIZE


def optimize_job(ctx: JobContext) -> JobResult:
    work_dir = job_work_dir(ctx.store, KIND, ctx.job.id)
    try:
        return _run(ctx, work_dir)
    except transient_errors():
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run(ctx: JobContext, work_dir: Path) -> JobResult:
    from pose_core.compression.base import CompressionError, StopRequested
    from pose_core.compression.budget import combined
    from pose_core.compression.measure import example_input, onnx_bytes_of
    from pose_core.compression.optimize import OptimizeTarget, optimize
    from pose_core.compression.results import write_and_measure

    params = ctx.params_as(OptimizeParams)
    inputs = prepare_inputs(ctx, params, work_dir)
    parent, results = inputs.parent, inputs.results
    target = OptimizeTarget(
        objective=params.objective,
        min_oks_vs_parent=params.min_oks_vs_parent,
        max_ap_loss=params.max_ap_loss,
        time_budget_s=params.time_budget_s,
    )
    parent_onnx = artifact_bytes(ctx.store, parent, ROLE_MODEL)
    example = example_input(inputs.data.held_out.crops)  # type: ignore[union-attr]

    def onnx_of(model: Any) -> bytes:
        return parent_onnx if model is inputs.source else onnx_bytes_of(model, example)

    accuracy = None
    if target.max_ap_loss is not None:
        eval_dir = inputs.data.eval_dataset_dir
        if eval_dir is None:
            raise JobError("max_ap_loss needs a labelled eval_dataset")
        accuracy = lambda onnx: float(results.accuracy(onnx, eval_dir)["ap"])  # noqa: E731
    try:
        candidates, parent_row = optimize(
            inputs.source,
            inputs.data,
            target,
            torch_form=has_torch_form(parent),
            onnx_of=onnx_of,
            accuracy=accuracy,
        )
    except CompressionError as exc:
        ctx.stop_if_requested()
        raise JobError(f"optimize failed: {exc}") from exc

    keep = [c for c in candidates if c.result is not None and c.row.get("pareto")]
    keep = [c for c in keep if c.row.get("meets_target")]
    recommended = None
    for index, candidate in enumerate(keep):
        assert candidate.result is not None
        ctx.progress(
            WORK_DONE + (1 - WORK_DONE) * index / max(len(keep), 1),
            f"storing candidate {candidate.name}",
            force=True,
        )
        try:
            measured = write_and_measure(
                candidate.result,
                ctx.scratch / f"candidate{index}",
                (inputs.source, parent_onnx),
                results.held_out,
                eval_dir=results.eval_dir,
                accuracy=results.accuracy,
                latency_rounds=params.latency_rounds,
                should_stop=ctx.should_stop,
                started=inputs.started,
            )
        except StopRequested as exc:
            raise JobCancelled(ctx.job.id) from exc
        ready = results.store_result(
            measured,
            parent=parent,
            steps=candidate.recipe,
            extra={
                "budget": combined(candidate.checks),
                "optimize": {"job": ctx.job.id, "candidate": candidate.name, **candidate.row},
            },
        )
        candidate.row["version"] = ready.number
        if candidate.row.get("recommended"):
            recommended = ready.number
    table = {
        "objective": target.objective,
        "target": {
            "max_ap_loss": target.max_ap_loss,
            "min_oks_vs_parent": target.min_oks_vs_parent,
        },
        "time_budget_s": target.time_budget_s,
        "parent": {**parent_row, "version": parent.number},
        "candidates": [c.row for c in candidates],
        "recommended": recommended,
        "held_out": results.held_out.describe(),
    }
    ctx.store.models.set_report_entry(parent.model, parent.number, ["optimize", ctx.job.id], table)
    stored = ", ".join(f"v{c.row['version']}" for c in keep) or "nothing"
    advice = f"recommends v{recommended}" if recommended else "no candidate met the target"
    return JobResult(parent.model, recommended, f"stored {stored}; {advice}")


@shared_task(name=task_name(KIND), bind=True, max_retries=None)
def optimize_task(self: Task, job_id: str) -> None:
    run_job(self, job_id, optimize_job)


__all__ = ["KIND", "optimize_job", "optimize_task"]
