"""Object Keypoint Similarity and COCO keypoint AP / AR (pycocotools, in memory).

:func:`coco_keypoint_metrics` runs ``COCOeval(iouType="keypoints")`` on dicts held in memory
(no temporary files) with pycocotools' console output silenced, and keeps COCOeval's
per-image matching (:class:`ImageMatches`, what :mod:`pose_core.evaluation.bootstrap`
resamples). :func:`oks` is the same similarity in plain numpy for one pair of people (used
for fidelity and matching).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose_core.keypoints import COCO17_SIGMAS

_SIGMAS = np.asarray(COCO17_SIGMAS, dtype=np.float64)
_EPS = np.spacing(1)  # pycocotools' epsilon


class EvaluationError(Exception):
    """The evaluation cannot be computed (no labelled people, malformed inputs)."""


@dataclass(frozen=True)
class KeypointPrediction:
    """One predicted person, as COCO results store it.

    Attributes:
        image_id: id of the image in the ground-truth set.
        keypoints: (17, 3) array of ``(x, y, score)`` in image pixels (the score is ignored by
            OKS but kept in the results).
        score: the person's confidence; it ranks predictions for AP.
    """

    image_id: int
    keypoints: np.ndarray = field(repr=False)
    score: float

    def to_coco(self) -> dict[str, Any]:
        """COCO results entry: ``image_id``, ``category_id``, flat ``keypoints``, ``score``."""
        return {
            "image_id": int(self.image_id),
            "category_id": 1,
            "keypoints": [float(v) for v in np.asarray(self.keypoints, dtype=np.float64).ravel()],
            "score": float(self.score),
        }


@dataclass(frozen=True)
class ImageMatches:
    """COCOeval's matching in one image (area range ``all``, ``maxDets=20``).

    Attributes:
        prediction_index: (D,) index into the evaluated predictions of each detection kept
            (sorted by decreasing score, at most 20).
        scores: (D,) their scores.
        matched: (T, D) whether detection d matched a ground-truth person at OKS threshold t
            (thresholds 0.50:0.05:0.95).
        ignored: (T, D) whether it is ignored at t (matched to a crowd / unlabelled person).
        gt_ids: (G,) annotation ids of the image's ground-truth people.
        gt_ignored: (G,) whether COCOeval ignores each (crowd, no labelled keypoint).
    """

    image_id: int
    prediction_index: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    matched: np.ndarray = field(repr=False)
    ignored: np.ndarray = field(repr=False)
    gt_ids: np.ndarray = field(repr=False)
    gt_ignored: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class CocoKeypointMetrics:
    """COCO keypoint summary (``maxDets=20``, area range ``all``) and the per-image matching
    it came from (empty without predictions)."""

    ap: float
    ap50: float
    ap75: float
    ar: float
    matches: tuple[ImageMatches, ...] = field(default=(), repr=False, compare=False)


def oks(pred: np.ndarray, gt: np.ndarray, area: float) -> float:
    """OKS between one predicted and one ground-truth person, as COCOeval computes it.

    Args:
        pred: (17, 2) or (17, 3) predicted keypoints; only ``x, y`` are used.
        gt: (17, 3) ground truth ``(x, y, v)``; keypoints with ``v == 0`` are skipped.
        area: the ground-truth person's area (scale ``s**2``).

    Returns:
        mean over labelled keypoints of ``exp(-d**2 / (2 * s**2 * k**2))`` with
        ``k = 2 * sigma``, in [0, 1]; ``nan`` when no keypoint is labelled.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape[0] != _SIGMAS.size or gt.shape != (_SIGMAS.size, 3):
        raise ValueError(f"expected (17, 2|3) and (17, 3), got {pred.shape} and {gt.shape}")
    labelled = gt[:, 2] > 0
    if not labelled.any():
        return float("nan")
    variances = (2.0 * _SIGMAS) ** 2
    sq_dist = np.sum((pred[:, :2] - gt[:, :2]) ** 2, axis=1)
    e = sq_dist / variances / (area + _EPS) / 2.0
    return float(np.mean(np.exp(-e[labelled])))


def coco_keypoint_metrics(
    coco_gt: Mapping[str, Any], predictions: Sequence[KeypointPrediction]
) -> CocoKeypointMetrics:
    """COCO OKS AP, AP50, AP75 and AR of ``predictions`` against ``coco_gt``.

    Args:
        coco_gt: COCO keypoints dict (``images``, ``annotations``, ``categories``); it is
            copied, not modified. Annotations without labelled keypoints, or marked crowd, are
            ignored by COCOeval as usual (a prediction matching them is neither TP nor FP).
        predictions: predicted people, any number per image (images with none are fine).

    Raises:
        EvaluationError: no annotation has a labelled keypoint, or a prediction names an
            image that is not in ``coco_gt``.
    """
    gt = _normalised_gt(coco_gt)
    if not any(a["num_keypoints"] > 0 and not a["iscrowd"] for a in gt["annotations"]):
        raise EvaluationError("the ground truth has no person with labelled keypoints")
    image_ids = {int(img["id"]) for img in gt["images"]}
    unknown = {p.image_id for p in predictions} - image_ids
    if unknown:
        raise EvaluationError(f"predictions for images not in the ground truth: {sorted(unknown)}")
    if not predictions:
        return CocoKeypointMetrics(ap=0.0, ap50=0.0, ap75=0.0, ar=0.0)

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        results = coco.loadRes([p.to_coco() for p in predictions])
        evaluator = COCOeval(coco, results, iouType="keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(float(s), 0.0) for s in evaluator.stats]  # -1 means "no such case": 0
    return CocoKeypointMetrics(
        ap=stats[0], ap50=stats[1], ap75=stats[2], ar=stats[5], matches=_matches(evaluator)
    )


def _matches(evaluator: Any) -> tuple[ImageMatches, ...]:
    """Per-image matching of an evaluated COCOeval, area range ``all`` and the largest
    ``maxDets`` (what its AP summarises)."""
    params = evaluator.params
    max_det = params.maxDets[-1]
    n_images = len(params.imgIds)
    found = []
    # evalImgs is ordered category, area range, image; category 1 and area "all" come first
    for entry in evaluator.evalImgs[:n_images]:
        if entry is None:  # an image with neither people nor predictions
            continue
        if entry["aRng"] != params.areaRng[0] or entry["maxDet"] != max_det:
            raise EvaluationError("unexpected COCOeval layout")
        found.append(
            ImageMatches(
                image_id=int(entry["image_id"]),
                # loadRes numbers the results 1..N in the order given
                prediction_index=np.asarray(entry["dtIds"][:max_det], dtype=np.int64) - 1,
                scores=np.asarray(entry["dtScores"][:max_det], dtype=np.float64),
                matched=np.asarray(entry["dtMatches"][:, :max_det]) > 0,
                ignored=np.asarray(entry["dtIgnore"][:, :max_det], dtype=bool),
                gt_ids=np.asarray(entry["gtIds"], dtype=np.int64),
                gt_ignored=np.asarray(entry["gtIgnore"], dtype=bool),
            )
        )
    return tuple(found)


def _normalised_gt(coco_gt: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy with the fields COCOeval needs filled in (``num_keypoints``, ``iscrowd``...)."""
    gt = copy.deepcopy(dict(coco_gt))
    gt.setdefault("categories", [{"id": 1, "name": "person"}])
    gt.setdefault("info", {})
    annotations = []
    for index, ann in enumerate(gt.get("annotations", [])):
        if ann.get("category_id", 1) != 1:
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        ann.setdefault("num_keypoints", int(np.count_nonzero(kps[:, 2] > 0)))
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", 1)
        ann.setdefault("id", index + 1)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        annotations.append(ann)
    gt["annotations"] = annotations
    return gt
