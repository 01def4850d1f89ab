"""Job rows: the source of truth for job state. Workers update them; the API reads them.

States: ``queued -> running -> succeeded | failed | cancelled`` (``queued -> cancelled``
too). A running job carries ``worker`` (``host:pid`` of the executing process) and a
``heartbeat_at`` refreshed while it works, so a dead worker can be detected.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from model_store.db import Database, as_utc
from model_store.errors import ConflictError, NotFoundError
from model_store.records import JOB_TERMINAL, JobInfo
from model_store.tables import JobRow, utcnow


def this_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_is_dead(worker: str | None, heartbeat_at: datetime | None, stale_after_s: float) -> bool:
    """A running job's worker is dead if its heartbeat is stale, or if it ran on this
    host under a pid that no longer exists."""
    if heartbeat_at is None or utcnow() - as_utc(heartbeat_at) > timedelta(seconds=stale_after_s):
        return True
    if not worker or ":" not in worker:
        return False
    host, _, pid_text = worker.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`JobStore.claim`."""

    job: JobInfo | None
    """The job now running on this worker, or None when it must not run here."""
    reason: str
    recovered: bool = False
    """True when the job was taken over from a dead worker (clean up its leftovers)."""
    busy_elsewhere: bool = False
    """True when a live worker still runs it: retry later."""


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, kind: str, params: Mapping[str, Any]) -> JobInfo:
        with self.db.session() as s:
            row = JobRow(
                id=str(uuid.uuid4()),
                kind=kind,
                status="queued",
                params=dict(params),
                progress=0.0,
                message="queued",
                attempts=0,
                created_at=utcnow(),
            )
            s.add(row)
            s.flush()
            return _info(row)

    def get(self, job_id: str) -> JobInfo:
        with self.db.session() as s:
            return _info(self._row(s, job_id))

    def list_jobs(
        self, *, status: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        with self.db.session() as s:
            query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if status:
                query = query.where(JobRow.status == status)
            if kind:
                query = query.where(JobRow.kind == kind)
            return [_info(row) for row in s.scalars(query)]

    def count_by_status(self) -> dict[str, int]:
        with self.db.session() as s:
            query = select(JobRow.status, func.count()).group_by(JobRow.status)
            return {status: count for status, count in s.execute(query)}

    def claim(self, job_id: str, *, max_attempts: int, stale_after_s: float) -> Claim:
        """Atomically take a job for this process (idempotent against re-delivery)."""
        me = this_worker_id()
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status in JOB_TERMINAL:
                return Claim(None, f"job is {row.status}")
            recovered = False
            if row.status == "running" and row.worker != me:
                if not worker_is_dead(row.worker, row.heartbeat_at, stale_after_s):
                    return Claim(None, f"running on live worker {row.worker}", busy_elsewhere=True)
                recovered = True
            if row.attempts >= max_attempts:
                row.status = "failed"
                row.error = (
                    f"gave up after {row.attempts} attempt(s) (worker lost or transient errors)"
                )
                row.finished_at = utcnow()
                return Claim(None, row.error, recovered=True)
            now = utcnow()
            row.status = "running"
            row.attempts += 1
            row.worker = me
            row.started_at = row.started_at or now
            row.heartbeat_at = now
            row.message = "started" if row.attempts == 1 else f"restarted (attempt {row.attempts})"
            return Claim(_info(row), "claimed", recovered=recovered)

    def requeue(self, job_id: str, message: str) -> JobInfo:
        """Put a running job whose worker died back to ``queued`` (recovery)."""
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status == "running":
                row.status = "queued"
                row.worker = None
                row.message = message
            return _info(row)

    def heartbeat(self, job_id: str) -> str:
        """Refresh the heartbeat of a job this process runs; return its status."""
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status == "running" and row.worker == this_worker_id():
                row.heartbeat_at = utcnow()
            return row.status

    def set_progress(self, job_id: str, progress: float, message: str) -> str:
        """Record progress (clamped to 0..1); return the job's status (e.g. 'cancelled')."""
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status == "running":
                row.progress = min(1.0, max(0.0, float(progress)))
                row.message = message
                row.heartbeat_at = utcnow()
            return row.status

    def succeed(
        self, job_id: str, *, model: str | None, version: int | None, message: str = "done"
    ) -> JobInfo:
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status != "running":
                raise ConflictError(f"job {job_id} is {row.status}")
            row.status = "succeeded"
            row.progress = 1.0
            row.message = message
            row.result_model = model
            row.result_version = version
            row.finished_at = utcnow()
            return _info(row)

    def fail(self, job_id: str, error: str) -> JobInfo:
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status not in JOB_TERMINAL:
                row.status = "failed"
                row.error = error
                row.message = "failed"
                row.finished_at = utcnow()
            return _info(row)

    def cancel(self, job_id: str) -> JobInfo:
        """Mark a queued or running job cancelled. Terminal jobs -> ConflictError."""
        with self.db.session() as s:
            row = self._row(s, job_id, lock=True)
            if row.status in JOB_TERMINAL:
                raise ConflictError(f"job {job_id} is already {row.status}")
            row.status = "cancelled"
            row.message = "cancelled"
            row.finished_at = utcnow()
            return _info(row)

    def running(self) -> list[JobInfo]:
        with self.db.session() as s:
            return [_info(r) for r in s.scalars(select(JobRow).where(JobRow.status == "running"))]

    @staticmethod
    def _row(s: Any, job_id: str, lock: bool = False) -> JobRow:
        query = select(JobRow).where(JobRow.id == job_id)
        if lock:
            query = query.with_for_update()
        row = s.scalars(query).first()
        if row is None:
            raise NotFoundError(f"job {job_id!r} not found")
        assert isinstance(row, JobRow)
        return row


def _info(row: JobRow) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        status=row.status,
        params=dict(row.params or {}),
        progress=row.progress,
        message=row.message,
        error=row.error,
        result_model=row.result_model,
        result_version=row.result_version,
        attempts=row.attempts,
        worker=row.worker,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
    )
