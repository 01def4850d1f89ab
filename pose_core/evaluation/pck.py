"""PCK and per-keypoint pixel errors on labelled keypoints.

PCK@t: a labelled keypoint (``v > 0``) is correct when its predicted position lies within
``t x max(w, h)`` of the label, ``(w, h)`` being the ground-truth person box (the "bbox"
normaliser of mmpose's ``PCKAccuracy``; it exists for every annotation, unlike a torso size
that needs both shoulders and hips labelled). Unlabelled keypoints count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose_core.keypoints import COCO17_NAMES

PCK_NORMALIZER = "ground-truth bbox max(w, h)"


@dataclass(frozen=True)
class KeypointErrorSummary:
    """Mean pixel error per COCO-17 keypoint (``None`` where nothing is labelled) and overall."""

    per_keypoint: dict[str, float | None]
    mean: float | None
    count: int


def keypoint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distances between predicted and labelled keypoints.

    Args:
        pred: (N, 17, 2+) predicted ``x, y`` (extra columns ignored).
        gt: (N, 17, 3) ground truth ``(x, y, v)``.

    Returns:
        (N, 17) float64 distances in the input's units; ``nan`` where ``v == 0``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[:2] != gt.shape[:2] or gt.shape[2] != 3:
        raise ValueError(f"expected (N, K, 2+) and (N, K, 3), got {pred.shape} and {gt.shape}")
    dist = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    return np.where(gt[..., 2] > 0, dist, np.nan)


def bbox_normalizer(bboxes: np.ndarray) -> np.ndarray:
    """PCK normaliser of each person: ``max(w, h)`` of its ``[x, y, w, h]`` box; (N, 4) -> (N,)."""
    boxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum(boxes[:, 2], boxes[:, 3])


def pck(errors: np.ndarray, normalizer: np.ndarray, threshold: float = 0.2) -> float:
    """Fraction of labelled keypoints with ``error <= threshold * normalizer``.

    Args:
        errors: (N, 17) distances from :func:`keypoint_errors` (``nan`` = unlabelled, skipped;
            ``inf`` = labelled but missed, e.g. a person no prediction matched).
        normalizer: (N,) per-person scale, see :func:`bbox_normalizer`.
        threshold: the ``t`` of PCK@t.

    Returns:
        PCK in [0, 1]; ``nan`` when nothing is labelled.
    """
    errors = np.asarray(errors, dtype=np.float64)
    norm = np.asarray(normalizer, dtype=np.float64).reshape(-1, 1)
    labelled = ~np.isnan(errors)
    if not labelled.any():
        return float("nan")
    correct = np.zeros_like(labelled)
    correct[labelled] = (errors <= threshold * norm)[labelled]
    return float(correct.sum() / labelled.sum())


def summarize_errors(errors: np.ndarray) -> KeypointErrorSummary:
    """Mean of the finite errors per keypoint and overall; (N, 17) -> summary."""
    errors = np.asarray(errors, dtype=np.float64).reshape(-1, len(COCO17_NAMES))
    finite = np.isfinite(errors)
    per_keypoint: dict[str, float | None] = {}
    for index, name in enumerate(COCO17_NAMES):
        column = errors[finite[:, index], index]
        per_keypoint[name] = float(column.mean()) if column.size else None
    count = int(finite.sum())
    mean = float(errors[finite].mean()) if count else None
    return KeypointErrorSummary(per_keypoint=per_keypoint, mean=mean, count=count)
