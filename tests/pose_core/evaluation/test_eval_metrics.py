"""COCO AP, OKS, PCK and dataset loading on known inputs (no model involved)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pose_core.evaluation.dataset import DatasetError, load_dataset
from pose_core.evaluation.oks import (
    EvaluationError,
    KeypointPrediction,
    coco_keypoint_metrics,
    oks,
)
from pose_core.evaluation.pck import (
    bbox_normalizer,
    keypoint_errors,
    pck,
    summarize_errors,
)
from pose_core.keypoints import COCO17_NAMES

DEV_SUBSET = Path(__file__).resolve().parents[2] / "data" / "dev_subset"


@pytest.fixture(scope="module")
def dev_subset():
    return load_dataset(DEV_SUBSET)


def _perfect_predictions(dataset, shift: float = 0.0) -> list[KeypointPrediction]:
    preds = []
    for record in dataset:
        for person in record.people_with_keypoints:
            kps = person.keypoints.copy()
            kps[:, :2] += shift
            kps[:, 2] = 1.0
            preds.append(KeypointPrediction(record.id, kps, 1.0))
    return preds


def test_dataset_loads_typed_records(dev_subset) -> None:
    assert len(dev_subset) == 3
    people = [p for img in dev_subset for p in img.annotations]
    assert all(p.keypoints.shape == (17, 3) for p in people)
    assert all(len(p.bbox) == 4 and p.area > 0 for p in people)
    # only annotations with labelled keypoints count as people
    assert dev_subset.num_people == sum(1 for p in people if p.num_labelled > 0)
    record = dev_subset.images[0]
    image = record.load()
    assert image.dtype == np.uint8
    assert image.shape == (record.height, record.width, 3)


def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    coco = {"images": [{"id": 1, "file_name": "nope.jpg", "width": 4, "height": 4}],
            "annotations": []}  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="missing"):
        load_dataset(tmp_path)


def test_exif_rotation_applied_only_when_annotations_need_it(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # stored landscape 40x20
    pixels[:, :5] = 255  # a white stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "images" / "a.jpg", exif=exif, quality=95)
    Image.fromarray(pixels).save(tmp_path / "images" / "b.jpg", exif=exif, quality=95)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 20},  # labelled as stored
            {"id": 2, "file_name": "b.jpg", "width": 20, "height": 40},  # labelled as displayed
        ],
        "annotations": [],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    stored, displayed = (r.load() for r in load_dataset(tmp_path))
    assert stored.shape == (20, 40, 3)
    assert stored[:, :5].mean() > 200
    assert displayed.shape == (40, 20, 3)
    assert displayed[:5, :].mean() > 200  # the left stripe is now on top


def test_oks_is_one_for_exact_match_and_decreases_with_distance() -> None:
    gt = np.zeros((17, 3))
    gt[:, 0] = np.arange(17) * 10.0
    gt[:, 1] = 50.0
    gt[:, 2] = 2
    assert oks(gt[:, :2], gt, area=10_000.0) == pytest.approx(1.0)
    values = [oks(gt[:, :2] + d, gt, area=10_000.0) for d in (1.0, 5.0, 20.0)]
    assert values[0] > values[1] > values[2] > 0.0
    # larger people tolerate the same pixel error better
    assert oks(gt[:, :2] + 5.0, gt, area=40_000.0) > values[1]


def test_oks_skips_unlabelled_keypoints() -> None:
    gt = np.zeros((17, 3))
    gt[:5, 2] = 2
    pred = np.zeros((17, 2))
    pred[5:] = 1000.0  # far off, but only on unlabelled keypoints
    assert oks(pred, gt, area=100.0) == pytest.approx(1.0)
    assert np.isnan(oks(pred, np.zeros((17, 3)), area=100.0))


def test_perfect_predictions_give_ap_one(dev_subset) -> None:
    metrics = coco_keypoint_metrics(dev_subset.coco, _perfect_predictions(dev_subset))
    assert metrics.ap == pytest.approx(1.0)
    assert metrics.ap50 == pytest.approx(1.0)
    assert metrics.ar == pytest.approx(1.0)


def test_shifted_predictions_lower_ap(dev_subset) -> None:
    exact = coco_keypoint_metrics(dev_subset.coco, _perfect_predictions(dev_subset)).ap
    aps = [
        coco_keypoint_metrics(dev_subset.coco, _perfect_predictions(dev_subset, s)).ap
        for s in (3.0, 10.0, 40.0)
    ]
    assert exact > aps[0] > aps[1] > aps[2]


def test_ap_of_one_pair_counts_the_thresholds_its_oks_passes(dev_subset) -> None:
    """Ties the numpy OKS to pycocotools': one person, one prediction."""
    record = dev_subset.images[0]
    person = record.people_with_keypoints[0]
    coco = {
        "images": [img for img in dev_subset.coco["images"] if img["id"] == record.id],
        "annotations": [a for a in dev_subset.coco["annotations"] if a["id"] == person.id],
        "categories": dev_subset.coco["categories"],
    }
    for shift in (2.0, 6.0, 10.0, 15.0, 25.0):  # OKS from ~0.98 down to ~0.3
        kps = person.keypoints.copy()
        kps[:, :2] += shift
        similarity = oks(kps, person.keypoints, person.area)
        metrics = coco_keypoint_metrics(coco, [KeypointPrediction(record.id, kps, 0.9)])
        thresholds = np.linspace(0.5, 0.95, 10)
        assert metrics.ap == pytest.approx(np.mean(similarity >= thresholds))
        assert metrics.ap50 == pytest.approx(1.0 if similarity >= 0.5 else 0.0)
        assert metrics.ap75 == pytest.approx(1.0 if similarity >= 0.75 else 0.0)


def test_no_predictions_and_images_without_predictions(dev_subset) -> None:
    assert coco_keypoint_metrics(dev_subset.coco, []).ap == 0.0
    first_image_only = [
        p for p in _perfect_predictions(dev_subset) if p.image_id == dev_subset.images[0].id
    ]
    metrics = coco_keypoint_metrics(dev_subset.coco, first_image_only)
    n_first = len(dev_subset.images[0].people_with_keypoints)
    assert metrics.ap50 == pytest.approx(1.0 * n_first / dev_subset.num_people, abs=0.02)
    assert metrics.ar == pytest.approx(n_first / dev_subset.num_people)


def test_metrics_do_not_modify_the_ground_truth(dev_subset) -> None:
    before = json.dumps(dev_subset.coco, sort_keys=True)
    coco_keypoint_metrics(dev_subset.coco, _perfect_predictions(dev_subset, 2.0))
    assert json.dumps(dev_subset.coco, sort_keys=True) == before


def test_unknown_image_and_unlabelled_ground_truth_are_errors(dev_subset) -> None:
    with pytest.raises(EvaluationError, match="not in the ground truth"):
        coco_keypoint_metrics(dev_subset.coco, [KeypointPrediction(-5, np.zeros((17, 3)), 1.0)])
    empty = {"images": dev_subset.coco["images"], "annotations": []}
    with pytest.raises(EvaluationError, match="no person"):
        coco_keypoint_metrics(empty, [])


def test_pixel_errors_and_pck() -> None:
    gt = np.zeros((2, 17, 3))
    gt[..., 2] = 2
    gt[1, :3, 2] = 0  # three unlabelled keypoints on person 1
    pred = gt[..., :2].copy()
    pred[0, :, 0] += 10.0  # 10 px off on person 0
    pred[1, :, 1] += 30.0  # 30 px off on person 1
    errors = keypoint_errors(pred, gt)
    assert np.isnan(errors[1, :3]).all()
    np.testing.assert_allclose(errors[0], 10.0)
    normalizer = bbox_normalizer(np.array([[0, 0, 100, 50], [0, 0, 40, 200]]))
    np.testing.assert_allclose(normalizer, [100.0, 200.0])
    assert pck(errors, normalizer, 0.2) == pytest.approx(1.0)  # 10 <= 20, 30 <= 40
    assert pck(errors, normalizer, 0.1) == pytest.approx(17 / 31)  # only person 0
    assert pck(errors, normalizer, 0.01) == 0.0
    summary = summarize_errors(errors)
    assert list(summary.per_keypoint) == list(COCO17_NAMES)
    assert summary.per_keypoint["nose"] == pytest.approx(10.0)
    assert summary.per_keypoint["left_ankle"] == pytest.approx(20.0)
    assert summary.mean == pytest.approx((17 * 10 + 14 * 30) / 31)


def test_pck_is_monotonic_in_threshold_and_counts_misses() -> None:
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(0, 200, (5, 17, 2)), np.full((5, 17, 1), 2.0)], axis=-1)
    pred = gt[..., :2] + rng.normal(0, 15, (5, 17, 2))
    errors = keypoint_errors(pred, gt)
    normalizer = np.full(5, 150.0)
    values = [pck(errors, normalizer, t) for t in np.linspace(0.0, 1.0, 21)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    missed = errors.copy()
    missed[0] = np.inf  # a person nobody predicted: labelled keypoints count as wrong
    assert pck(missed, normalizer, 10.0) == pytest.approx(4 / 5)
    assert summarize_errors(missed).count == 4 * 17


def test_detector_predictions_are_matched_one_to_one_by_oks(dev_subset) -> None:
    from pose_core.evaluation.protocol import coco_keypoints, match_by_oks
    from pose_core.inference.types import PersonPose

    record = next(r for r in dev_subset if len(r.people_with_keypoints) == 2)
    first, second = record.people_with_keypoints

    def pose_near(person, shift: float) -> PersonPose:
        kps = person.keypoints.astype(np.float32).copy()
        kps[:, :2] += 0.5 + shift  # continuous coordinates: label + 0.5
        kps[:, 2] = 0.9
        return PersonPose(bbox=person.bbox, score=0.9, keypoints=kps)

    far = pose_near(first, 5000.0)
    poses = [pose_near(second, 1.0), far, pose_near(first, 0.0), pose_near(first, 6.0)]
    assert match_by_oks(record, poses) == [(0, 2), (1, 0)]
    np.testing.assert_allclose(coco_keypoints(poses[2])[:, :2], first.keypoints[:, :2], atol=1e-3)
    assert match_by_oks(record, [far]) == []
