"""The bootstrap interval of COCO AP on cases whose interval follows from counting, and its
agreement with pycocotools on real labels (no model involved)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pose_core.evaluation.bootstrap import ap_interval
from pose_core.evaluation.dataset import load_dataset
from pose_core.evaluation.oks import KeypointPrediction, coco_keypoint_metrics

DEV_SUBSET = Path(__file__).resolve().parents[2] / "data" / "dev_subset"
RECALL_POINTS = 101


def _people(n: int, n_right: int) -> tuple[dict, list[KeypointPrediction]]:
    """``n`` people, one per 200 x 200 image; the first ``n_right`` predicted exactly (score
    0.9), the others 150 px off (OKS ~0, score 0.1)."""
    rng = np.random.default_rng(1)
    images, annotations, predictions = [], [], []
    for i in range(n):
        keypoints = np.column_stack([rng.uniform(40, 160, (17, 2)), np.full(17, 2.0)])
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        annotations.append(
            {
                "id": 1000 + i,
                "image_id": i + 1,
                "category_id": 1,
                "keypoints": keypoints.ravel().tolist(),
                "bbox": [40, 40, 120, 120],
                "area": 120.0 * 120.0,
                "iscrowd": 0,
            }
        )
        predicted = keypoints.copy()
        predicted[:, 2] = 1.0
        right = i < n_right
        if not right:
            predicted[:, 0] += 150.0
        predictions.append(KeypointPrediction(i + 1, predicted, 0.9 if right else 0.1))
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
    return coco, predictions


def _by_person(coco: dict, predictions: list[KeypointPrediction]):
    metrics = coco_keypoint_metrics(coco, predictions)
    ids = [a["id"] for a in coco["annotations"]]  # prediction i is person i
    return metrics, ap_interval(metrics, ids, {i: i for i in ids}, unit="person")


def _binomial_quantile(n: int, p: float, q: float) -> int:
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cdf >= q:
            return k
    return n


def test_interval_of_right_or_wrong_people_is_the_binomial_one() -> None:
    """Right predictions ranked above wrong ones: precision is 1 up to recall k/n and 0
    after, so AP = (k + 1) / 101 (recall points 0, 0.01, ..., k/n). A resample of the n
    people draws k ~ Binomial(n, 1/2) right ones, so the 95% interval is
    ((q2.5 + 1) / 101, (q97.5 + 1) / 101) with the binomial's quantiles (40 and 60)."""
    n = 100
    metrics, interval = _by_person(*_people(n, n // 2))
    assert metrics.ap == pytest.approx((n // 2 + 1) / RECALL_POINTS)
    low_k = _binomial_quantile(n, 0.5, 0.025)
    high_k = _binomial_quantile(n, 0.5, 0.975)
    # 1000 resamples estimate a percentile to about one count either way
    assert interval.low * RECALL_POINTS - 1 == pytest.approx(low_k, abs=1.01)
    assert interval.high * RECALL_POINTS - 1 == pytest.approx(high_k, abs=1.01)
    assert (interval.unit, interval.n_units, interval.resamples) == ("person", n, 1000)
    assert interval.level == 0.95


def test_interval_narrows_as_one_over_sqrt_people() -> None:
    _, small = _by_person(*_people(25, 12))
    _, large = _by_person(*_people(100, 50))
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 1.5 < ratio < 2.7  # sqrt(100 / 25) = 2


def test_all_right_has_no_spread_and_the_seed_fixes_the_interval() -> None:
    _, perfect = _by_person(*_people(30, 30))
    assert (perfect.low, perfect.high) == (pytest.approx(1.0), pytest.approx(1.0))
    coco, predictions = _people(40, 20)
    _, first = _by_person(coco, predictions)
    _, again = _by_person(coco, predictions)
    assert first == again


def test_real_labels_with_misses_and_crowded_images_agree_with_pycocotools() -> None:
    """dev_subset (several people per image) with noisy predictions and one extra false
    positive per image: the AP recomputed from COCOeval's matching is COCOeval's (the
    function checks it), in both unit choices, and the interval holds the AP."""
    dataset = load_dataset(DEV_SUBSET)
    rng = np.random.default_rng(3)
    predictions: list[KeypointPrediction] = []
    person_units: list[int] = []
    for record in dataset:
        for person in record.people_with_keypoints:
            keypoints = person.keypoints.copy()
            keypoints[:, :2] += rng.normal(0.0, 0.05 * math.sqrt(person.area), (17, 2))
            keypoints[:, 2] = 1.0
            predictions.append(KeypointPrediction(record.id, keypoints, float(rng.uniform())))
            person_units.append(person.id)
        stray = np.column_stack([rng.uniform(0, 50, (17, 2)), np.ones(17)])
        predictions.append(KeypointPrediction(record.id, stray, float(rng.uniform())))
        person_units.append(-record.id)  # a false positive: its own unit
    metrics = coco_keypoint_metrics(dataset.coco, predictions)
    assert 0.0 < metrics.ap < 1.0
    people = {p.id: p.id for r in dataset for p in r.people_with_keypoints}
    by_person = ap_interval(metrics, person_units, people, unit="person")
    images = {p.id: r.id for r in dataset for p in r.annotations}
    by_image = ap_interval(
        metrics, [p.image_id for p in predictions], images, unit="image", resamples=200
    )
    assert by_person.n_units == dataset.num_people + len(dataset)
    assert by_image.n_units == len(dataset)
    for interval in (by_person, by_image):
        assert 0.0 <= interval.low <= metrics.ap <= interval.high <= 1.0
        assert interval.low < interval.high
