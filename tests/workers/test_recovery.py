from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import redis

from common.jobs import QUEUE
from common.settings import Settings
from model_store import Store
from model_store.jobs import this_worker_id
from model_store.tables import JobRow, utcnow
from workers.celery_app import create_celery
from workers.recovery import recover_stale_jobs


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _running(store: Store, worker: str, attempts: int, age_s: float = 0) -> str:
    job = store.jobs.create("export_onnx", {"model": "tiny", "version": 1})
    with store.db.session() as s:
        row = s.get(JobRow, job.id)
        assert row is not None
        row.status, row.worker, row.attempts = "running", worker, attempts
        row.heartbeat_at = utcnow() - timedelta(seconds=age_s)
    return job.id


def test_jobs_of_dead_workers_are_requeued_or_failed(
    store: Store, settings: Settings, stored_tiny: int
):
    host = this_worker_id().split(":")[0]
    dead_local = _running(store, f"{host}:{_dead_pid()}", attempts=1)
    stale_remote = _running(store, "other-host:7", attempts=1, age_s=3600)
    exhausted = _running(store, "other-host:8", attempts=settings.job_max_attempts, age_s=3600)
    alive = _running(store, this_worker_id(), attempts=1)
    leftover = store.models.create_pending_version(
        "tiny", format="onnx", parent=1, created_by_job=dead_local
    )
    broker = redis.Redis(unix_socket_path=settings.effective_redis_url.split("://")[1])
    broker.delete(QUEUE)

    recovered = recover_stale_jobs(settings, create_celery(settings))

    assert sorted(recovered) == sorted([dead_local, stale_remote, exhausted])
    assert store.jobs.get(dead_local).status == "queued"
    assert store.jobs.get(stale_remote).status == "queued"
    assert store.jobs.get(exhausted).status == "failed"
    assert store.jobs.get(alive).status == "running"
    assert store.models.get_version("tiny", leftover.number).status == "failed"
    queued = [broker.lindex(QUEUE, i) or b"" for i in range(broker.llen(QUEUE))]
    assert len(queued) == 2
    assert any(dead_local.encode() in m for m in queued)
    assert any(stale_remote.encode() in m for m in queued)


def test_folders_of_killed_attempts_and_ended_jobs_are_removed(
    store: Store, settings: Settings, stored_tiny: int
):
    from workers.runtime import attempt_scratch, job_work_dir

    live = _running(store, this_worker_id(), attempts=2)
    dead = _running(store, "other-host:9", attempts=1, age_s=3600)
    ended = store.jobs.create("compress", {"model": "tiny", "version": 1}).id
    store.jobs.fail(ended, "boom")
    kept = [attempt_scratch(store, live, 2), job_work_dir(store, "compress", live)]
    gone = [
        attempt_scratch(store, live, 1),  # an earlier, killed attempt of a live job
        attempt_scratch(store, dead, 1),  # the attempt of a dead worker (re-queued now)
        attempt_scratch(store, "no-such-job", 1),
        job_work_dir(store, "compress", ended),
    ]
    for folder in kept + gone:
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "file.bin").write_bytes(b"x" * 10)
    job_work_dir(store, "compress", dead).mkdir(parents=True)  # kept: resumes from it

    recover_stale_jobs(settings, create_celery(settings))

    assert store.jobs.get(dead).status == "queued"
    assert all(folder.exists() for folder in kept)
    assert job_work_dir(store, "compress", dead).exists()
    assert not any(folder.exists() for folder in gone)
