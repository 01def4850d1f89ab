"""Starting jobs from the API: a job row first, then the Celery task sent by name."""

from __future__ import annotations

import logging

from celery import Celery
from fastapi import status
from fastapi.responses import JSONResponse

from app.errors import ApiError
from app.schemas import JobPublic
from common.jobs import task_name
from common.params import JobParams
from model_store import JobInfo, Store

logger = logging.getLogger(__name__)


def enqueue_job(store: Store, celery: Celery, kind: str, params: JobParams) -> JobInfo:
    """Create a ``queued`` job row holding ``params`` (the typed params of ``kind``, which the
    worker reads back with the same model) and send task ``posecompress.<kind>`` (task id =
    job id).

    If the broker refuses the message the job is marked failed and 503 is raised."""
    job = store.jobs.create(kind, params.model_dump(mode="json"))
    try:
        celery.send_task(task_name(kind), args=[job.id], task_id=job.id)
    except Exception as exc:
        store.jobs.fail(job.id, f"could not queue the job: {exc}")
        raise ApiError(503, "broker_unavailable", f"job queue unavailable: {exc}") from exc
    return job


def revoke_job(celery: Celery, job_id: str) -> None:
    """Best effort: tell workers to drop the task if they have not started it."""
    try:
        celery.control.revoke(job_id)
    except Exception:
        logger.warning("revoke of job %s failed; the worker will see the cancelled row", job_id)


def accepted(job: JobInfo) -> JSONResponse:
    """The 202 answer of a job-starting endpoint: the job body and its ``Location``."""
    return JSONResponse(
        JobPublic.of(job).model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/jobs/{job.id}"},
    )
