"""Person region of interest from the detector's alignment keypoints.

As MediaPipe's pose_detection_to_roi: AlignmentPointsRects (keypoint 0 = hip centre,
keypoint 1 = full-body size/rotation point, target angle 90 degrees, box side = 2 x their
distance) then RectTransformation (scale 1.25, square on the long side).
"""

from __future__ import annotations

import math

import numpy as np

from pose_core.inference.crop import CropRect

ROI_SCALE = 1.25
ROTATION_TARGET_ANGLE = math.pi / 2.0


def normalize_radians(angle: float) -> float:
    """Wrap an angle into [-pi, pi)."""
    return angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi))


def roi_from_alignment_points(
    centre: np.ndarray, scale_point: np.ndarray, scale: float = ROI_SCALE
) -> CropRect:
    """Rotated square crop around a person.

    Args:
        centre: (2,) x, y of the hip centre, image pixels.
        scale_point: (2,) x, y of the point that encodes body size and rotation.
        scale: enlargement of the 2 x distance box.

    Returns:
        A square :class:`CropRect` centred on ``centre``, side ``2 * |scale_point - centre| *
        scale``, rotated so that ``scale_point`` ends up straight above ``centre`` in the crop.
    """
    dx = float(scale_point[0] - centre[0])
    dy = float(scale_point[1] - centre[1])
    side = 2.0 * math.hypot(dx, dy) * scale
    rotation = normalize_radians(ROTATION_TARGET_ANGLE - math.atan2(-dy, dx))
    return CropRect(float(centre[0]), float(centre[1]), side, side, rotation)


def rois_from_detections(keypoints: np.ndarray, scale: float = ROI_SCALE) -> list[CropRect]:
    """One ROI per detection from (M, 4, 2) detector keypoints in image pixels."""
    return [roi_from_alignment_points(points[0], points[1], scale) for points in keypoints]
