"""Runs one job body inside a Celery task: claim, heartbeat, progress, cancellation,
failure handling and retries of transient errors. Task modules stay thin::

    @shared_task(name=task_name(EXPORT_ONNX), bind=True, max_retries=None)
    def export_onnx(self: Task, job_id: str) -> None:
        run_job(self, job_id, export_onnx_job)
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from common.params import JobParams
from common.settings import Settings, get_settings
from model_store import JobInfo, Store, open_store

logger = logging.getLogger(__name__)

ParamsT = TypeVar("ParamsT", bound=JobParams)

TRANSIENT_RETRY_COUNTDOWN_S = 5
PROGRESS_INTERVAL_S = 0.5  #: progress writes, at most one per interval unless forced
STOP_PROBE_INTERVAL_S = 1.0  #: reads of the job row by ``should_stop()``, at most one per interval
TRANSIENT_MAX_RETRIES = 5
SCRATCH_PREFIX = "job-"  #: ``<data dir>/tmp/job-<job id>-<attempt>``
WORK_DIR = "work"  #: ``<data dir>/work/<kind>-<job id>``


class JobCancelled(Exception):
    """Raised inside a job body when the job row says ``cancelled``."""


class JobError(Exception):
    """A job failed for a reason worth showing to the user (no traceback needed)."""


@dataclass(frozen=True)
class JobResult:
    model: str | None
    version: int | None
    message: str = "done"


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "try again later": lost database or broker connections."""
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
        ConnectionError,
    )


@lru_cache(maxsize=1)
def worker_store() -> Store:
    """This worker process's store (opened lazily, after the pool fork)."""
    settings = get_settings()
    return open_store(settings.effective_database_url, settings.resolved_data_dir)


class JobContext:
    """What a job body gets: its row, the store, settings, scratch space, progress.

    Cancellation has one source, :meth:`should_stop` (the job row, read at most once a
    second; a progress write also tells): pose_core loops get it as ``should_stop``, job code
    calls :meth:`stop_if_requested`, and a progress write that finds the row cancelled stops."""

    def __init__(self, store: Store, job: JobInfo, settings: Settings, scratch: Path) -> None:
        self.store = store
        self.job = job
        self.settings = settings
        self.scratch = scratch
        self._last_write = 0.0
        self._last_probe = float("-inf")
        self._cancelled = False

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def params_as(self, model: type[ParamsT]) -> ParamsT:
        """The job row's params, read with the model the API stored them with (a field missing
        from an older row takes its default)."""
        try:
            return model.model_validate(self.job.params)
        except ValidationError as exc:
            raise JobError(f"invalid job params: {exc}") from exc

    def progress(self, fraction: float, message: str, *, force: bool = False) -> None:
        """Record progress (throttled to ~2 writes/s) and stop if the job was cancelled."""
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write = now
        if self.store.jobs.set_progress(self.job.id, fraction, message) == "cancelled":
            self._cancelled = True
        if self._cancelled:
            raise JobCancelled(self.job.id)

    def should_stop(self) -> bool:
        """Whether the job was cancelled: reads the job row at most once a second."""
        now = time.monotonic()
        if not self._cancelled and now - self._last_probe >= STOP_PROBE_INTERVAL_S:
            self._last_probe = now
            self._cancelled = self.store.jobs.get(self.job.id).status == "cancelled"
        return self._cancelled

    def stop_if_requested(self) -> None:
        """Raise :class:`JobCancelled` when :meth:`should_stop` says so."""
        if self.should_stop():
            raise JobCancelled(self.job.id)


class _Heartbeat(threading.Thread):
    def __init__(self, store: Store, job_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.store, self.job_id, self.interval = store, job_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.store.jobs.heartbeat(self.job_id)
            except Exception:  # keep beating through short database hiccups
                logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)


def attempt_scratch(store: Store, job_id: str, attempt: int) -> Path:
    """Scratch folder of one attempt of a job, removed when the attempt ends (or, if its
    worker was killed, by recovery: :func:`workers.recovery.remove_abandoned_folders`)."""
    return store.scratch_dir / f"{SCRATCH_PREFIX}{job_id}-{attempt}"


def job_work_dir(store: Store, kind: str, job_id: str) -> Path:
    """Folder of a job that outlives its attempts (checkpoints to resume from); removed when
    the job ends, or by recovery once the job has ended without its worker."""
    return store.data_dir / WORK_DIR / f"{kind}-{job_id}"


def run_job(task: Task, job_id: str, body: Callable[[JobContext], JobResult]) -> None:
    settings = get_settings()
    transient = transient_errors()
    try:
        store = worker_store()
        claim = store.jobs.claim(
            job_id,
            max_attempts=settings.job_max_attempts,
            stale_after_s=settings.job_stale_after_s,
        )
        if claim.busy_elsewhere:
            logger.info("job %s: %s; retrying later", job_id, claim.reason)
            raise task.retry(countdown=settings.job_stale_after_s, max_retries=None)
        # Leftovers of an earlier attempt (killed worker, transient retry) never become ready.
        store.models.fail_pending_versions_of_job(job_id, "abandoned by an earlier attempt")
        if claim.job is None:
            logger.info("job %s not run: %s", job_id, claim.reason)
            return
    except transient as exc:
        logger.warning("job %s: transient error while claiming: %s", job_id, exc)
        raise task.retry(
            exc=exc, countdown=TRANSIENT_RETRY_COUNTDOWN_S, max_retries=TRANSIENT_MAX_RETRIES
        ) from exc

    scratch = attempt_scratch(store, job_id, claim.job.attempts)
    scratch.mkdir(parents=True, exist_ok=True)
    heartbeat = _Heartbeat(store, job_id, settings.job_heartbeat_s)
    heartbeat.start()
    try:
        result = body(JobContext(store, claim.job, settings, scratch))
        store.jobs.succeed(
            job_id, model=result.model, version=result.version, message=result.message
        )
        logger.info("job %s succeeded: %s", job_id, result)
    except JobCancelled:
        store.models.fail_pending_versions_of_job(job_id, "job cancelled")
        logger.info("job %s cancelled", job_id)
    except SoftTimeLimitExceeded:
        _fail(store, job_id, f"time limit of {settings.task_time_limit} s exceeded")
    except transient as exc:
        logger.warning("job %s: transient error, will retry: %s", job_id, exc)
        try:
            store.jobs.requeue(job_id, f"retrying after transient error: {exc}")
        except transient:
            logger.warning("job %s: could not re-queue its row", job_id)
        raise task.retry(
            exc=exc, countdown=TRANSIENT_RETRY_COUNTDOWN_S, max_retries=TRANSIENT_MAX_RETRIES
        ) from exc
    except JobError as exc:
        _fail(store, job_id, str(exc))
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        _fail(store, job_id, f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stopped.set()
        shutil.rmtree(scratch, ignore_errors=True)


def _fail(store: Store, job_id: str, error: str) -> None:
    store.models.fail_pending_versions_of_job(job_id, error)
    store.jobs.fail(job_id, error)
    logger.warning("job %s failed: %s", job_id, error)
