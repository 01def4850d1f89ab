"""Liveness (/health), readiness (/ready: database and broker reachable; the supervised
worker's state under ``posecompress serve``), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import CeleryDep, SettingsDep, StoreDep
from app.embedded.worker_status import worker_status
from app.errors import ApiError
from app.schemas import ErrorResponse, HealthPublic, ReadyPublic
from model_store.records import JOB_STATUSES

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health() -> HealthPublic:
    return HealthPublic(status="ok")


def _broker_ping(celery: CeleryDep) -> None:
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)


@router.get("/ready", response_model=ReadyPublic, responses={503: {"model": ErrorResponse}})
async def ready(store: StoreDep, celery: CeleryDep, settings: SettingsDep) -> ReadyPublic:
    """200 while the database and the broker answer (503 otherwise). Under ``posecompress
    serve`` the worker is reported too: ``degraded`` while it is down (jobs wait; predict
    still works)."""
    checks: dict[str, str] = {}
    for name, check in (("database", store.db.ping), ("broker", lambda: _broker_ping(celery))):
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unreachable: {type(exc).__name__}: {exc}"
    if any(value != "ok" for value in checks.values()):
        raise ApiError(503, "not_ready", "a dependency is unreachable", checks)
    worker = await run_in_threadpool(worker_status, settings)
    if worker is not None:
        checks["worker"] = worker.describe()
    return ReadyPublic(status="ready" if worker is None or worker.up else "degraded", checks=checks)


@router.get("/metrics", response_class=Response, include_in_schema=True)
def metrics(request: Request, store: StoreDep) -> Response:
    """Prometheus text format."""
    metrics = request.app.state.metrics
    counts = store.jobs.count_by_status()
    for status in JOB_STATUSES:
        metrics.jobs.labels(status).set(counts.get(status, 0))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
