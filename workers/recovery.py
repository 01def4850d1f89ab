"""Startup recovery: jobs left ``running`` by a dead worker are re-queued or failed.

Run by every worker when it becomes ready, then every ``JOB_STALE_AFTER_S`` seconds
in a background thread of the worker's main process (so a worker that died for good
on another host is noticed too). A job's worker is dead when its heartbeat
is stale, or when it ran on this host under a pid that no longer exists (the embedded
worker restarted by ``posecompress serve``). Its ``pending`` versions are marked failed
first, so no half-made version ever becomes ``ready``. The scratch folders of killed attempts,
and the work folders of jobs that ended without their worker, are removed.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from celery import Celery

from common.jobs import task_name
from common.settings import Settings
from model_store import JobInfo, NotFoundError, Store, open_store
from model_store.jobs import worker_is_dead
from workers.runtime import SCRATCH_PREFIX, WORK_DIR

logger = logging.getLogger(__name__)


def recover_stale_jobs(settings: Settings, celery: Celery) -> list[str]:
    """Re-queue (or fail, past the attempt limit) every running job whose worker died."""
    store = open_store(
        settings.effective_database_url, settings.resolved_data_dir, init_schema=False
    )
    recovered: list[str] = []
    try:
        for job in store.jobs.running():
            if not worker_is_dead(job.worker, job.heartbeat_at, settings.job_stale_after_s):
                continue
            store.models.fail_pending_versions_of_job(job.id, f"worker {job.worker} lost")
            if job.attempts >= settings.job_max_attempts:
                store.jobs.fail(job.id, f"worker lost {job.attempts} time(s); giving up")
                logger.warning("job %s failed after worker loss", job.id)
            else:
                store.jobs.requeue(job.id, f"re-queued: worker {job.worker} lost")
                celery.send_task(task_name(job.kind), args=[job.id], task_id=job.id)
                logger.warning("job %s re-queued after worker loss", job.id)
            recovered.append(job.id)
        remove_abandoned_folders(store)
    finally:
        store.close()
    return recovered


def remove_abandoned_folders(store: Store) -> list[Path]:
    """Remove attempt scratch folders no running attempt owns, and the work folders of jobs
    that ended (or no longer exist); return what was removed."""
    removed = []
    for folder in store.scratch_dir.glob(f"{SCRATCH_PREFIX}*"):
        job_id, _, attempt = folder.name.removeprefix(SCRATCH_PREFIX).rpartition("-")
        job = _job(store, job_id)
        if job is None or job.status != "running" or str(job.attempts) != attempt:
            removed.append(folder)
    for folder in (store.data_dir / WORK_DIR).glob("*-*"):
        job = _job(store, folder.name.partition("-")[2])
        if job is None or job.terminal:
            removed.append(folder)
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed abandoned job folder %s", folder)
    return removed


def _job(store: Store, job_id: str) -> JobInfo | None:
    try:
        return store.jobs.get(job_id)
    except NotFoundError:
        return None


def start_recovery_thread(settings: Settings, celery: Celery) -> threading.Thread:
    """Run :func:`recover_stale_jobs` now and then periodically, in a daemon thread."""
    interval = max(10.0, settings.job_stale_after_s)

    def loop() -> None:
        while True:
            try:
                recover_stale_jobs(settings, celery)
            except Exception:  # never let recovery take the worker down
                logger.exception("job recovery failed")
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="job-recovery", daemon=True)
    thread.start()
    return thread
