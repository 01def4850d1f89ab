"""Job ``export_tflite``: convert a version's torch form (``recipe`` + ``weights``) to TFLite,
compare the LiteRT interpreter with ONNX Runtime on the version's ``model`` graph, and store a
new version (parent = the source) whose ``tflite`` artifact is the converted file; the
source's other artifacts (``model``, ``recipe``, ``weights``, ``detector``) are shared, so the
new version serves exactly like its parent.

Params: :class:`common.params.TfliteExportParams`: ``precision``, ``verify_samples`` (seeded
random inputs in [0, 1) of the input shape), ``tolerance`` (float or null: the largest accepted
absolute difference of any output; null = only report it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from celery import Task, shared_task

from common.jobs import EXPORT_TFLITE, task_name
from common.params import TfliteExportParams
from pose_core.roles import ROLE_DETECTOR, ROLE_MODEL, ROLE_RECIPE, ROLE_TFLITE, ROLE_WEIGHTS
from workers.runtime import JobContext, JobError, JobResult, run_job
from workers.version_pipeline import artifact_bytes, has_role, has_torch_form, load_compressible

KIND = EXPORT_TFLITE
SHARED_ROLES = (ROLE_MODEL, ROLE_RECIPE, ROLE_WEIGHTS, ROLE_DETECTOR)


def export_tflite_job(ctx: JobContext) -> JobResult:
    from pose_core.export_tflite import TfliteExportError, TfliteRunner, export_tflite
    from pose_core.inference.runtime import OnnxRunner
    from pose_core.models.graph import GraphModel

    params = ctx.params_as(TfliteExportParams)
    name, precision = params.model, params.precision
    samples, tolerance = params.verify_samples, params.tolerance
    parent = ctx.store.models.resolve(name, params.version)
    if not has_torch_form(parent):
        raise JobError(f"{name} v{parent.number} has no torch form (artifacts recipe + weights)")
    model = load_compressible(ctx.store, parent)
    assert isinstance(model, GraphModel)  # has_torch_form: recipe + weights
    input_shape = (1, *(int(d) for d in model.input_spec["shape"]))
    ctx.progress(0.05, f"converting {name} v{parent.number} to TFLite {precision}", force=True)
    try:
        tflite = export_tflite(model, input_shape, precision)
    except TfliteExportError as exc:
        raise JobError(str(exc)) from exc
    ctx.stop_if_requested()
    ctx.progress(0.8, "checking the TFLite file against ONNX Runtime", force=True)
    inputs = np.random.default_rng(0).random((samples, *input_shape[1:]), dtype=np.float32)
    reference = OnnxRunner(artifact_bytes(ctx.store, parent, ROLE_MODEL))(inputs)
    converted = TfliteRunner(tflite)(inputs)
    diffs = _max_abs_diffs(reference, converted)
    if tolerance is not None and max(diffs) > float(tolerance):
        raise JobError(f"the TFLite file differs from ONNX Runtime by {max(diffs):.3g} "
                       f"> tolerance {tolerance}")
    ctx.stop_if_requested()
    path = ctx.scratch / f"{name}-v{parent.number}-{precision}.tflite"
    path.write_bytes(tflite)
    pending = ctx.store.models.create_pending_version(
        name,
        format=parent.format,
        parent=parent.number,
        recipe={"export": "tflite", "precision": precision, "verify_samples": samples},
        manifest=parent.manifest,
        created_by_job=ctx.job.id,
    )
    shared = {role: parent.artifact(role) for role in SHARED_ROLES if has_role(parent, role)}
    report: dict[str, Any] = {
        "export": {
            "format": "tflite",
            "precision": precision,
            "tflite_bytes": len(tflite),
            "onnx_bytes": parent.artifact(ROLE_MODEL).size,
            "parity_samples": samples,
            "parity_max_abs_diff": diffs,
            "output_names": list(model.output_names),
        }
    }
    ready = ctx.store.models.finalize_version(
        name, pending.number, {ROLE_TFLITE: path}, report=report, shared=shared
    )
    message = f"v{ready.number}: TFLite {precision}, {len(tflite)} bytes"
    return JobResult(name, ready.number, message)


def _max_abs_diffs(reference: list[np.ndarray], converted: list[np.ndarray]) -> list[float]:
    """Per output: the largest absolute difference (the shapes must agree)."""
    if len(reference) != len(converted):
        raise JobError(f"the TFLite file has {len(converted)} outputs, ONNX {len(reference)}")
    diffs = []
    for ref, out in zip(reference, converted, strict=True):
        if np.shape(ref) != np.shape(out):
            raise JobError(f"TFLite output shape {np.shape(out)} != ONNX {np.shape(ref)}")
        if not np.isfinite(out).all():
            raise JobError("the TFLite file gives non-finite outputs")
        diffs.append(float(np.abs(np.asarray(ref, np.float64) - out).max(initial=0.0)))
    return diffs


@shared_task(name=task_name(KIND), bind=True, max_retries=None)
def export_tflite(self: Task, job_id: str) -> None:
    run_job(self, job_id, export_tflite_job)
