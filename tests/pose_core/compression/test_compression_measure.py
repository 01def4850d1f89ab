"""The compression report's fidelity and latency come from pose_core.evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from pose_core.compression.measure import landmark_fidelity, latency_summary
from pose_core.evaluation.latency import LatencyStats
from pose_core.keypoints import BLAZEPOSE33_TO_COCO17


def _landmarks(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 256, size=(n, 39 * 5)).astype(np.float32)


def test_identical_landmarks_are_perfectly_faithful() -> None:
    out = _landmarks(4, 0)
    fidelity = landmark_fidelity(out, out.copy(), 256.0, held_out=True)
    assert fidelity == {
        "mean_landmark_px": 0.0,
        "mean_oks_vs_parent": 1.0,
        "n_crops": 4,
        "held_out": True,
    }


def test_error_counts_only_the_coco_keypoints() -> None:
    parent = _landmarks(3, 1)
    candidate = parent.copy().reshape(3, -1, 5)
    non_coco = [i for i in range(33) if i not in BLAZEPOSE33_TO_COCO17]
    candidate[:, non_coco, :2] += 50.0
    candidate[:, list(BLAZEPOSE33_TO_COCO17), 0] += 3.0
    candidate[:, list(BLAZEPOSE33_TO_COCO17), 1] += 4.0
    fidelity = landmark_fidelity(candidate.reshape(3, -1), parent, 256.0, held_out=False)
    assert fidelity["mean_landmark_px"] == pytest.approx(5.0, rel=1e-5)
    assert 0.0 < fidelity["mean_oks_vs_parent"] < 1.0  # type: ignore[operator]


def test_oks_falls_with_the_error() -> None:
    parent = _landmarks(2, 2)
    near, far = parent + 2.0, parent + 20.0
    oks_near = landmark_fidelity(near, parent, 256.0, held_out=True)["mean_oks_vs_parent"]
    oks_far = landmark_fidelity(far, parent, 256.0, held_out=True)["mean_oks_vs_parent"]
    assert oks_near > oks_far  # type: ignore[operator]


def test_latency_summary_keeps_the_report_keys() -> None:
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0])
    assert latency_summary(stats) == {"p50": stats.p50, "p95": stats.p95, "n": 4}
