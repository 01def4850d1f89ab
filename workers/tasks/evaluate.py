"""Job ``evaluate``: COCO AP / PCK / per-keypoint errors of a stored version on a stored,
labelled dataset, through the inference pipeline serving runs (ONNX Runtime), attached to
the version's report under ``report["evaluation"][<dataset id>][<mode>]``.

Params (JSON, validated by the API): ``model`` (str), ``version`` (int), ``dataset`` (id),
``mode`` (``gt-boxes`` | ``detector``).
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from common.jobs import EVALUATE, task_name
from common.params import EvaluateParams
from model_store import Store, VersionInfo
from workers.runtime import JobContext, JobError, JobResult, run_job
from workers.version_pipeline import PipelineUnavailable, version_pipeline

KIND = EVALUATE


def evaluate_version(
    store: Store,
    version: VersionInfo,
    dataset_dir: Any,
    mode: str,
    threads: int,
    progress: Any = None,
) -> dict[str, Any]:
    """The evaluation report (JSON-able dict) of ``version`` on a dataset directory."""
    from pose_core.evaluation import EvaluationMode, evaluate_dataset

    chosen = EvaluationMode(mode)
    try:
        pipeline = version_pipeline(
            store, version, threads, with_detector=chosen is EvaluationMode.DETECTOR
        )
    except PipelineUnavailable as exc:
        raise JobError(str(exc)) from exc
    return evaluate_dataset(pipeline, dataset_dir, chosen, progress=progress).to_dict()


def attach_evaluation(
    store: Store, version: VersionInfo, dataset_key: str, mode: str, report: dict[str, Any]
) -> None:
    """Store ``report`` under ``report["evaluation"][dataset_key][mode]`` of the version."""
    store.models.set_report_entry(
        version.model, version.number, ["evaluation", dataset_key, mode], report
    )


def evaluate_job(ctx: JobContext) -> JobResult:
    params = ctx.params_as(EvaluateParams)
    name, dataset_id, mode = params.model, params.dataset, params.mode
    version = ctx.store.models.resolve(name, params.version)
    dataset = ctx.store.datasets.get(dataset_id)
    if not dataset.has_annotations:
        raise JobError(f"dataset {dataset_id} has no annotations.json: nothing to evaluate")
    ctx.progress(0.0, f"evaluating {name} v{version.number} ({mode})", force=True)

    def on_image(done: int, total: int) -> None:
        ctx.progress(0.95 * done / total, f"image {done}/{total}", force=done == total)

    report = evaluate_version(
        ctx.store,
        version,
        ctx.store.datasets.path(dataset_id),
        mode,
        ctx.settings.ort_threads,
        on_image,
    )
    report["dataset_name"] = dataset.name
    ctx.stop_if_requested()
    attach_evaluation(ctx.store, version, dataset_id, mode, report)
    return JobResult(
        name, version.number, f"v{version.number} {mode} AP {report['ap']:.4f} on {dataset_id}"
    )


@shared_task(name=task_name(KIND), bind=True, max_retries=None)
def evaluate(self: Task, job_id: str) -> None:
    run_job(self, job_id, evaluate_job)
