"""The export_onnx job body on a real store (no Celery: see tests/e2e for that)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from service_support import export_tiny_onnx

from common.settings import Settings
from model_store import Store
from workers.runtime import JobCancelled, JobContext, JobError
from workers.tasks.export_onnx import export_onnx_job


def _context(store: Store, settings: Settings, tmp_path: Path, **params: object) -> JobContext:
    job = store.jobs.create("export_onnx", {"model": "tiny", "version": 1, **params})
    claimed = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60).job
    assert claimed is not None
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return JobContext(store, claimed, settings, scratch)


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": x})[0])


@pytest.mark.parametrize("level", ["disable", "basic", "extended"])
def test_export_writes_a_verified_child_version(
    store: Store, settings: Settings, stored_tiny: int, tmp_path: Path, level: str
):
    ctx = _context(store, settings, tmp_path, optimization=level, verify_samples=4)
    result = export_onnx_job(ctx)
    assert (result.model, result.version) == ("tiny", 2)
    child = store.models.get_version("tiny", 2)
    assert child.status == "ready" and child.parent == 1 and child.created_by_job == ctx.job.id
    assert child.recipe == {"export": "onnx", "optimization": level, "verify_samples": 4}
    assert child.report is not None and child.report["export"]["parity_max_abs_diff"] <= 1e-4
    x = np.random.default_rng(7).random((2, 3, 64, 64), dtype=np.float32)
    parent_out = _outputs(store.models.artifact_path("tiny", 1), x)
    child_out = _outputs(store.models.artifact_path("tiny", 2), x)
    np.testing.assert_allclose(child_out, parent_out, atol=1e-5)
    assert store.jobs.get(ctx.job.id).progress > 0.9


def test_cancelled_job_stops_before_storing(
    store: Store, settings: Settings, stored_tiny: int, tmp_path: Path
):
    ctx = _context(store, settings, tmp_path, verify_samples=50)
    store.jobs.cancel(ctx.job.id)
    with pytest.raises(JobCancelled):
        export_onnx_job(ctx)
    assert [v.status for v in store.models.list_versions("tiny")] == ["ready"]
    assert store.models.resolve("tiny", "latest").number == 1


def test_parity_failure_is_a_job_error(
    store: Store, settings: Settings, stored_tiny: int, tmp_path: Path, monkeypatch
):
    # A tolerance test must fail loudly rather than store a drifting graph.
    monkeypatch.setattr("workers.tasks.export_onnx.parity_check", lambda *a, **k: 1.0)
    ctx = _context(store, settings, tmp_path, optimization="extended")
    with pytest.raises(JobError, match=r"differs from its parent by 1 > 0\.0001"):
        export_onnx_job(ctx)


def test_params_the_api_would_refuse_fail_the_job(
    store: Store, settings: Settings, stored_tiny: int, tmp_path: Path
):
    """The worker reads the row with the API's model (common.params.ExportParams)."""
    ctx = _context(store, settings, tmp_path, tolerance=-1.0)
    with pytest.raises(JobError, match="invalid job params"):
        export_onnx_job(ctx)


def test_an_export_never_moves_the_default(store: Store, settings: Settings, tmp_path: Path):
    manifest = {"kind": "heatmap", "input_size": [64, 64]}
    path = export_tiny_onnx(tmp_path / "tiny.onnx")
    pending = store.models.create_pending_version("tiny", format="onnx", manifest=manifest)
    store.models.finalize_version("tiny", pending.number, {"model": path})
    assert store.models.get_model("tiny").default == 1
    export_onnx_job(_context(store, settings, tmp_path, verify_samples=2))
    child = store.models.get_version("tiny", 2)
    assert store.models.is_servable(child)  # it could serve, but nobody promoted it
    info = store.models.get_model("tiny")
    assert (info.default, info.latest) == (1, 2)
    assert store.models.resolve("tiny", "default").number == 1
