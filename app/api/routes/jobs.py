"""/jobs: list, get, cancel (DELETE). Jobs are started by the resource they act on
(e.g. ``POST /models/{name}/versions/{v}/export``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CeleryDep, StoreDep
from app.jobs import revoke_job
from app.schemas import ErrorResponse, JobPublic

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


@router.get("", response_model=list[JobPublic])
def list_jobs(
    store: StoreDep,
    status: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobPublic]:
    return [JobPublic.of(j) for j in store.jobs.list_jobs(status=status, kind=kind, limit=limit)]


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, store: StoreDep) -> JobPublic:
    return JobPublic.of(store.jobs.get(job_id))


@router.delete("/{job_id}", response_model=JobPublic, responses={409: {"model": ErrorResponse}})
def cancel_job(job_id: str, store: StoreDep, celery: CeleryDep) -> JobPublic:
    """Cancel a queued or running job (409 if it already ended). A running job stops at
    its next progress step; its unfinished version is marked failed."""
    job = store.jobs.cancel(job_id)
    revoke_job(celery, job_id)
    return JobPublic.of(job)
