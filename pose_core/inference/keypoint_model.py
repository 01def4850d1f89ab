"""The contract a keypoint model fulfils to be served by :class:`PosePipeline`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pose_core.inference.crop import CropRect
from pose_core.inference.types import PersonPose


class KeypointModel(Protocol):
    """Top-down keypoint estimation on given person crops.

    Implementations: :class:`pose_core.inference.landmarks.BlazePoseLandmarkModel` (BlazePose
    regression) and :class:`pose_core.inference.heatmap.HeatmapModel` (heatmap models).
    """

    def estimate(self, image: np.ndarray, rects: Sequence[CropRect]) -> list[PersonPose]:
        """One person per crop rectangle of a (H, W, 3) uint8 RGB image, in ``rects`` order,
        all the crops in one batched model call."""
        ...
