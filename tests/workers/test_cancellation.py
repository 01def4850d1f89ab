"""One cancellation probe: JobContext.should_stop (throttled), also fed by progress writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import Settings
from model_store import Store
from workers import runtime
from workers.runtime import JobCancelled, JobContext


def _context(store: Store, settings: Settings, tmp_path: Path) -> JobContext:
    job = store.jobs.create("export_onnx", {"model": "tiny", "version": 1})
    claimed = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60).job
    assert claimed is not None
    return JobContext(store, claimed, settings, tmp_path)


def test_should_stop_reads_the_row_at_most_once_a_second(
    store: Store, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(store, settings, tmp_path)
    assert ctx.should_stop() is False
    store.jobs.cancel(ctx.job.id)
    assert ctx.should_stop() is False  # read less than a second ago
    monkeypatch.setattr(runtime, "STOP_PROBE_INTERVAL_S", 0.0)
    assert ctx.should_stop() is True
    with pytest.raises(JobCancelled):
        ctx.stop_if_requested()


def test_a_progress_write_that_finds_the_job_cancelled_stops_it(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    ctx = _context(store, settings, tmp_path)
    assert ctx.should_stop() is False
    store.jobs.cancel(ctx.job.id)
    with pytest.raises(JobCancelled):
        ctx.progress(0.5, "halfway", force=True)
    assert ctx.should_stop() is True
