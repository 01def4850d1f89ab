"""Keypoint sets as data: COCO-17 names, skeleton, flip pairs and the BlazePose-33 mapping."""

from __future__ import annotations

from typing import Final

COCO17_NAMES: Final[tuple[str, ...]] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: Limb pairs (0-based COCO-17 indices) drawn as the skeleton.
COCO17_SKELETON: Final[tuple[tuple[int, int], ...]] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

#: Left/right pairs swapped by a horizontal flip.
COCO17_FLIP_PAIRS: Final[tuple[tuple[int, int], ...]] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)  # fmt: skip

#: COCO OKS per-keypoint sigmas (pycocotools' defaults).
COCO17_SIGMAS: Final[tuple[float, ...]] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip

BLAZEPOSE_NUM_LANDMARKS: Final[int] = 39  # 33 body landmarks + 6 auxiliary (ROI) points

#: For each COCO-17 keypoint, the BlazePose-33 landmark index it comes from.
BLAZEPOSE33_TO_COCO17: Final[tuple[int, ...]] = (
    0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28,
)  # fmt: skip

#: Left/right pairs among the 33 BlazePose landmarks (for flip augmentation).
BLAZEPOSE33_FLIP_PAIRS: Final[tuple[tuple[int, int], ...]] = (
    (1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18),
    (19, 20), (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32),
)  # fmt: skip
