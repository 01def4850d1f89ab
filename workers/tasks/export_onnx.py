"""Job ``export_onnx``: export a stored version to an (optimized) ONNX graph, verify it
against its parent on random inputs, store it as a new version with lineage.

Params: :class:`common.params.ExportParams` (``optimization``, ``verify_samples``,
``tolerance``; the defaults live there).
"""

from __future__ import annotations

from celery import Task, shared_task

from common.jobs import EXPORT_ONNX, task_name
from common.params import ExportParams
from pose_core.roles import ROLE_MODEL
from workers.onnx_export import optimize_onnx, parity_check
from workers.runtime import JobContext, JobError, JobResult, run_job

KIND = EXPORT_ONNX


def export_onnx_job(ctx: JobContext) -> JobResult:
    params = ctx.params_as(ExportParams)
    model, level = params.model, params.optimization
    samples, tolerance = params.verify_samples, params.tolerance
    threads = ctx.settings.ort_threads

    parent = ctx.store.models.resolve(model, params.version)
    if parent.format != "onnx":
        raise JobError(f"export from format {parent.format!r} is not supported yet")
    ctx.progress(0.0, f"exporting {model} v{parent.number}", force=True)
    source = ctx.store.models.artifact_path(model, parent.number)
    pending = ctx.store.models.create_pending_version(
        model,
        format="onnx",
        parent=parent.number,
        recipe={"export": "onnx", "optimization": level, "verify_samples": samples},
        manifest=parent.manifest,
        created_by_job=ctx.job.id,
    )
    target = ctx.scratch / "model.onnx"
    optimize_onnx(source, target, level, threads)
    ctx.progress(0.1, "graph written; checking parity", force=True)

    def on_step(done: int, total: int) -> None:
        ctx.progress(0.1 + 0.85 * done / total, f"parity check {done}/{total}", force=done == total)

    max_diff = parity_check(
        source,
        target,
        samples=samples,
        manifest=parent.manifest or {},
        threads=threads,
        on_step=on_step,
    )
    if max_diff > tolerance:
        raise JobError(f"exported graph differs from its parent by {max_diff:.3g} > {tolerance}")
    ctx.stop_if_requested()
    ready = ctx.store.models.finalize_version(
        model,
        pending.number,
        {"model": target},
        report={
            "export": {
                "optimization": level,
                "parity_samples": samples,
                "parity_max_abs_diff": max_diff,
                "parent_bytes": parent.artifact(ROLE_MODEL).size,
            }
        },
    )
    art = ready.artifact(ROLE_MODEL)
    return JobResult(model, ready.number, f"v{ready.number}: {art.size} bytes, sha256 {art.sha256}")


@shared_task(name=task_name(KIND), bind=True, max_retries=None)
def export_onnx(self: Task, job_id: str) -> None:
    run_job(self, job_id, export_onnx_job)
