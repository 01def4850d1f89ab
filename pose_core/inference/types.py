"""Shared types of the inference pipeline: the model runner contract and one person's pose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: A compiled model: an NCHW float32 batch in, the model's outputs (in its output order) out.
Runner = Callable[[np.ndarray], Sequence[np.ndarray]]


@dataclass(frozen=True)
class PersonPose:
    """One person found in an image, in image pixels.

    Attributes:
        bbox: (x, y, w, h) box around the keypoints, clipped to the image.
        score: person confidence in [0, 1] (BlazePose: pose presence).
        keypoints: (17, 3) float array of x, y, score in COCO-17 order
            (:data:`pose_core.keypoints.COCO17_NAMES`); x, y lie inside ``bbox``.
        landmarks: optional (39, 5) BlazePose landmarks x, y, z (image pixels, unclipped),
            visibility, presence (probabilities); rows 0-32 are the body landmarks.
    """

    bbox: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray
    landmarks: np.ndarray | None = None


def sigmoid(values: np.ndarray) -> np.ndarray:
    """Logistic function, elementwise; float32 in, float32 out."""
    values = np.clip(np.asarray(values, dtype=np.float32), -80.0, 80.0)
    return (1.0 / (1.0 + np.exp(-values))).astype(np.float32)


def keypoints_box(
    points: np.ndarray, width: int, height: int
) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """Clip (K, 2) points to the image and return (their extent as x, y, w, h; clipped points)."""
    clipped = np.empty_like(np.asarray(points, dtype=np.float64))
    clipped[:, 0] = np.clip(points[:, 0], 0.0, float(width))
    clipped[:, 1] = np.clip(points[:, 1], 0.0, float(height))
    x0, y0 = clipped.min(axis=0)
    x1, y1 = clipped.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), clipped
