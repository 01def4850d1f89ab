"""Interleaved latency bookkeeping and student-vs-parent fidelity metrics."""

from __future__ import annotations

import numpy as np
import pytest

from pose_core.evaluation.fidelity import fidelity_metrics
from pose_core.evaluation.latency import LatencyStats, measure_latency, median_ratio


def test_every_round_calls_every_runner_once_in_shuffled_order() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    stats = measure_latency(runners, rounds=30, warmup=2)
    assert set(stats) == set("abcd")
    assert all(s.n == 30 and len(s.samples_ms) == 30 for s in stats.values())
    rounds = [calls[i : i + 4] for i in range(0, len(calls), 4)]
    assert len(rounds) == 32
    assert all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    assert all(0 <= s.p50 <= s.p95 for s in stats.values())


def test_median_ratio_pairs_samples_by_round() -> None:
    # the machine "drifts": both runners slow down together; their ratio stays 0.5
    slow = LatencyStats.from_samples([10.0, 20.0, 40.0, 80.0, 160.0])
    fast = LatencyStats.from_samples([5.0, 10.0, 20.0, 40.0, 80.0])
    assert median_ratio(fast, slow) == pytest.approx(0.5)
    assert fast.p50 == pytest.approx(20.0)
    with pytest.raises(ValueError):
        median_ratio(fast, LatencyStats.from_samples([1.0]))


def test_identical_student_has_perfect_fidelity() -> None:
    rng = np.random.default_rng(1)
    parent = np.concatenate([rng.uniform(0, 300, (4, 17, 2)), rng.uniform(0, 1, (4, 17, 1))], -1)
    boxes = np.tile([10.0, 20.0, 100.0, 200.0], (4, 1))
    report = fidelity_metrics(parent.copy(), parent, boxes, crop_sides=np.full(4, 300.0))
    assert report.n_people == 4
    assert report.mean_error_px == pytest.approx(0.0)
    assert report.mean_error_crop_px == pytest.approx(0.0)
    assert report.mean_oks == pytest.approx(1.0)


def test_shifted_student_error_in_image_and_crop_pixels() -> None:
    parent = np.zeros((2, 17, 3))
    student = parent.copy()
    student[..., 0] += 3.0
    student[..., 1] += 4.0  # 5 px away everywhere
    boxes = np.array([[0, 0, 100, 200], [0, 0, 50, 100]], dtype=float)
    report = fidelity_metrics(student, parent, boxes, crop_sides=np.array([512.0, 128.0]))
    assert report.mean_error_px == pytest.approx(5.0)
    # 5 px of a 512 px crop is 2.5 px of the 256 input; of a 128 px crop, 10 px
    assert report.mean_error_crop_px == pytest.approx((2.5 + 10.0) / 2)
    assert 0.0 < report.mean_oks < 1.0
    far = fidelity_metrics(student * 4, parent, boxes)
    assert far.mean_oks < report.mean_oks
    assert far.mean_error_crop_px is None
    assert (
        fidelity_metrics(np.zeros((0, 17, 3)), np.zeros((0, 17, 3)), np.zeros((0, 4))).n_people == 0
    )
