"""The served ONNX Runtime model and MediaPipe's LiteRT give the same COCO AP (issue 3)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pose_core.evaluation.dataset import load_dataset
from pose_core.evaluation.protocol import EvaluationMode, evaluate

pytest.importorskip("ai_edge_litert")

REPO = Path(__file__).resolve().parents[3]
DEV_SUBSET = REPO / "tests" / "data" / "dev_subset"


def _bench_module():
    spec = importlib.util.spec_from_file_location(
        "eval_runtimes", REPO / "bench" / "eval_runtimes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_onnx_runtime_ap_equals_litert_ap(tmp_path: Path) -> None:
    bench = _bench_module()
    dataset = load_dataset(DEV_SUBSET)
    litert = bench.litert_pipeline(REPO / ".cache", threads=2)
    ort = bench.onnx_runtime_pipeline(REPO / ".cache", threads=2, work_dir=tmp_path)
    for mode in EvaluationMode:
        reference = evaluate(litert, dataset, mode)
        served = evaluate(ort, dataset, mode)
        assert served.n_predictions == reference.n_predictions
        assert abs(served.ap - reference.ap) <= bench.AP_TOLERANCE
        assert served.mean_error_px == pytest.approx(reference.mean_error_px, abs=0.05)
