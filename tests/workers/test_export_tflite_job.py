"""The export_tflite job body on a real store (no Celery), with the ``edge`` extra: the
built-in BlazePose-Full v1 converted to TFLite and run by the LiteRT interpreter against
ONNX Runtime on real person crops (tests/data photos); fp16 and dynamic-range INT8 files
made from the fp32 one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_support import cached_bundle, store_builtin

from common.settings import Settings
from model_store import Store
from pose_core.builtin import BUILTIN_MODEL_NAME
from pose_core.export_tflite import TfliteRunner, quantize_tflite
from pose_core.inference.runtime import OnnxRunner
from workers.runtime import JobContext, JobError
from workers.tasks.export_tflite import export_tflite_job

pytest.importorskip("litert_torch", reason="TFLite export needs the edge extra: .[edge]")

pytestmark = pytest.mark.slow


def _context(store: Store, settings: Settings, tmp_path: Path, **params: object) -> JobContext:
    job = store.jobs.create("export_tflite", {"model": BUILTIN_MODEL_NAME, "version": 1, **params})
    claimed = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60).job
    assert claimed is not None
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return JobContext(store, claimed, settings, scratch)


def _landmarks_xy(outputs: list[np.ndarray]) -> np.ndarray:
    """(N, 33, 2) body landmarks in crop pixels from the first output (N, 195)."""
    return outputs[0].reshape(len(outputs[0]), 39, 5)[:, :33, :2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, blazepose_assets, broker_url: str):
    """blazepose-full v1 exported once (fp32) by the job: (store, settings, v2 info)."""
    from model_store import open_store

    folder = tmp_path_factory.mktemp("tflite-export")
    settings = Settings(data_dir=folder / "data", redis_url=broker_url, ort_threads=1)
    store = open_store(settings.effective_database_url, settings.resolved_data_dir)
    store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    result = export_tflite_job(_context(store, settings, folder, precision="fp32",
                                        verify_samples=2, tolerance=0.05))
    yield store, store.models.get_version(BUILTIN_MODEL_NAME, result.version)
    store.close()


def test_fp32_tflite_matches_onnx_runtime_on_real_crops(exported, landmark_photo_crops) -> None:
    store, child = exported
    parent = store.models.get_version(BUILTIN_MODEL_NAME, 1)
    assert child.status == "ready" and child.parent == 1
    assert child.recipe == {"export": "tflite", "precision": "fp32", "verify_samples": 2}
    roles = {a.role: a.sha256 for a in child.artifacts}
    assert set(roles) == {"tflite", "model", "recipe", "weights", "detector"}
    assert all(roles[r] == parent.artifact(r).sha256 for r in roles if r != "tflite")
    report = child.report["export"]
    assert report["tflite_bytes"] == child.artifact("tflite").size
    assert len(report["parity_max_abs_diff"]) == 3  # landmarks, presence, heatmap

    tflite = store.models.artifact_path(BUILTIN_MODEL_NAME, child.number, "tflite").read_bytes()
    ort_out = OnnxRunner(store.models.artifact_path(BUILTIN_MODEL_NAME, 1).read_bytes())(
        landmark_photo_crops
    )
    lite_out = TfliteRunner(tflite)(landmark_photo_crops)
    error = np.abs(_landmarks_xy(lite_out) - _landmarks_xy(ort_out)).max()
    assert error < 0.05, f"fp32 TFLite landmarks differ from ONNX Runtime by {error:.4f} px"
    np.testing.assert_allclose(lite_out[1], ort_out[1], atol=1e-4)  # presence


def test_fp16_and_int8_dynamic_files_are_smaller_and_run(exported, landmark_photo_crops) -> None:
    store, child = exported
    fp32 = store.models.artifact_path(BUILTIN_MODEL_NAME, child.number, "tflite").read_bytes()
    fp16 = quantize_tflite(fp32, "fp16")
    int8 = quantize_tflite(fp32, "int8_dynamic")
    assert len(fp16) <= 0.55 * len(fp32), (len(fp16), len(fp32))
    assert len(int8) <= 0.35 * len(fp32), (len(int8), len(fp32))
    reference = _landmarks_xy(TfliteRunner(fp32)(landmark_photo_crops))
    # BlazePose's weights ship as float16, so casting them back to fp16 is lossless
    fp16_error = np.abs(_landmarks_xy(TfliteRunner(fp16)(landmark_photo_crops)) - reference)
    assert fp16_error.max() < 0.05
    int8_error = np.abs(_landmarks_xy(TfliteRunner(int8)(landmark_photo_crops)) - reference)
    assert np.isfinite(int8_error).all() and np.median(int8_error) < 10.0


def test_a_version_without_torch_form_fails_clearly(
    store: Store, settings: Settings, stored_tiny: int, tmp_path: Path
) -> None:
    job = store.jobs.create("export_tflite", {"model": "tiny", "version": 1, "precision": "fp32"})
    claimed = store.jobs.claim(job.id, max_attempts=3, stale_after_s=60).job
    assert claimed is not None
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(JobError, match="no torch form"):
        export_tflite_job(JobContext(store, claimed, settings, scratch))
