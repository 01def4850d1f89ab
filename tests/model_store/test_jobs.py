from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from model_store import ConflictError, NotFoundError, Store
from model_store.jobs import this_worker_id, worker_is_dead
from model_store.tables import JobRow, utcnow


def _set(store: Store, job_id: str, **fields: object) -> None:
    with store.db.session() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_job_lifecycle(store: Store):
    job = store.jobs.create("export_onnx", {"model": "m"})
    assert (job.status, job.progress, job.attempts) == ("queued", 0.0, 0)
    claim = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert claim.job is not None and claim.job.status == "running"
    assert claim.job.worker == this_worker_id() and claim.job.attempts == 1
    assert store.jobs.set_progress(job.id, 1.7, "almost") == "running"
    assert store.jobs.get(job.id).progress == 1.0
    done = store.jobs.succeed(job.id, model="m", version=2)
    assert (done.status, done.result_model, done.result_version) == ("succeeded", "m", 2)
    assert done.finished_at is not None and done.finished_at.tzinfo is not None
    again = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert again.job is None and "succeeded" in again.reason
    assert store.jobs.count_by_status() == {"succeeded": 1}


def test_cancel(store: Store):
    job = store.jobs.create("k", {})
    store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert store.jobs.cancel(job.id).status == "cancelled"
    assert store.jobs.set_progress(job.id, 0.5, "still going?") == "cancelled"
    with pytest.raises(ConflictError):
        store.jobs.cancel(job.id)
    with pytest.raises(ConflictError):
        store.jobs.succeed(job.id, model=None, version=None)
    assert store.jobs.claim(job.id, max_attempts=3, stale_after_s=60).job is None
    with pytest.raises(NotFoundError):
        store.jobs.get("missing")


def test_claim_from_live_worker_is_refused_and_from_dead_worker_recovered(store: Store):
    job = store.jobs.create("k", {})
    _set(store, job.id, status="running", worker="elsewhere:1", heartbeat_at=utcnow(), attempts=1)
    busy = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert busy.job is None and busy.busy_elsewhere

    _set(store, job.id, heartbeat_at=utcnow() - timedelta(seconds=120))
    taken = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert taken.recovered and taken.job is not None and taken.job.attempts == 2

    _set(store, job.id, worker=f"{this_worker_id().split(':')[0]}:{_dead_pid()}")
    again = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert again.recovered and again.job is not None and again.job.attempts == 3

    _set(store, job.id, worker="elsewhere:1", heartbeat_at=utcnow() - timedelta(seconds=120))
    gave_up = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60)
    assert gave_up.job is None and gave_up.recovered
    final = store.jobs.get(job.id)
    assert final.status == "failed" and "gave up after 3" in (final.error or "")


def test_worker_is_dead():
    now = utcnow()
    assert worker_is_dead("h:1", None, 60)
    assert worker_is_dead("h:1", now - timedelta(seconds=61), 60)
    assert not worker_is_dead("other-host:1", now, 60)
    assert not worker_is_dead(this_worker_id(), now, 60)
    assert worker_is_dead(f"{this_worker_id().split(':')[0]}:{_dead_pid()}", now, 60)
