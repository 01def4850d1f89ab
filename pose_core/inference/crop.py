"""Rotated-rectangle crops and the affine maps between crop and image pixels.

Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5``.
A crop is described by a :class:`CropRect` (centre, size, rotation in image pixels) and is
sampled to ``out_w x out_h`` pixels with bilinear interpolation (OpenCV's ``warpAffine``, as
MediaPipe's CPU ImageToTensor); samples outside the image are zero (black), as MediaPipe's
zero border mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np


@dataclass(frozen=True)
class CropRect:
    """A rectangle in image pixels: centre, width, height, rotation (radians, clockwise)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    @classmethod
    def square_around_box(cls, x: float, y: float, w: float, h: float, scale: float) -> CropRect:
        """Square crop centred on the ``[x, y, w, h]`` box, side ``scale * max(w, h)``."""
        side = scale * max(w, h)
        return cls(x + w / 2.0, y + h / 2.0, side, side, 0.0)


def crop_to_image_matrix(rect: CropRect, out_w: int, out_h: int) -> np.ndarray:
    """2x3 affine matrix mapping crop pixel coordinates to image pixel coordinates.

    Returns: float64 array of shape (2, 3); ``image_xy = M[:, :2] @ crop_xy + M[:, 2]``.
    """
    cos, sin = np.cos(rect.rotation), np.sin(rect.rotation)
    sx, sy = rect.width / out_w, rect.height / out_h
    linear = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    centre_crop = np.array([out_w / 2.0, out_h / 2.0])
    offset = np.array([rect.cx, rect.cy]) - linear @ centre_crop
    return np.concatenate([linear, offset[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (..., 2) through a 2x3 affine matrix; returns the same shape."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, as a 2x3 matrix."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], axis=1)


def sampling_matrix(rect: CropRect, out_w: int, out_h: int) -> np.ndarray:
    """The 2x3 matrix mapping output pixel indices to source pixel indices (index space:
    pixel ``i`` at ``i``), i.e. :func:`crop_to_image_matrix` between pixel centres."""
    matrix = crop_to_image_matrix(rect, out_w, out_h)
    sampling = matrix.copy()
    sampling[:, 2] = matrix[:, :2] @ np.array([0.5, 0.5]) + matrix[:, 2] - 0.5
    return sampling


@lru_cache(maxsize=1)
def _opencv() -> ModuleType:
    """OpenCV, imported on first use, its own thread pool off: one crop is too small to
    split, and the callers run concurrently with ONNX Runtime's threads."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


def _footprint(sampling: np.ndarray, out_w: int, out_h: int, width: int, height: int) -> tuple:
    """Index-space bounds ``x0, y0, x1, y1`` of the source pixels bilinear sampling reads,
    clipped to the image (empty when x0 >= x1 or y0 >= y1)."""
    corners = apply_affine(
        sampling,
        np.array(
            [[0, 0], [out_w - 1, 0], [0, out_h - 1], [out_w - 1, out_h - 1]], dtype=np.float64
        ),
    )
    low = np.floor(corners.min(axis=0)).astype(int)
    high = np.floor(corners.max(axis=0)).astype(int) + 2  # the right / lower taps, exclusive
    return (max(low[0], 0), max(low[1], 0), min(high[0], width), min(high[1], height))


def warp_crops(image: np.ndarray, rects: Sequence[CropRect], out_w: int, out_h: int) -> np.ndarray:
    """Sample every rect of ``rects`` out of ``image`` with bilinear interpolation.

    Only the part of the image a crop reads is converted to float32, so the samples are not
    rounded back to the image's integers (the landmark model moves by up to pixels for such
    rounding).

    Args:
        image: (H, W, C) array (uint8 or float), RGB.
        rects: the regions to crop, in image pixels.
        out_w, out_h: output size in pixels.

    Returns:
        (N, out_h, out_w, C) float32 in the input's value range; zero outside the image.
    """
    cv2 = _opencv()
    image = np.asarray(image)
    height, width, channels = image.shape
    crops = np.zeros((len(rects), out_h, out_w, channels), dtype=np.float32)
    for i, rect in enumerate(rects):
        sampling = sampling_matrix(rect, out_w, out_h)
        x0, y0, x1, y1 = _footprint(sampling, out_w, out_h, width, height)
        if x0 >= x1 or y0 >= y1:
            continue  # wholly outside: black
        region = np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32)
        sampling[:, 2] -= (x0, y0)
        cv2.warpAffine(
            region,
            sampling,
            (out_w, out_h),
            dst=crops[i],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return crops


def warp_crop(image: np.ndarray, rect: CropRect, out_w: int, out_h: int) -> np.ndarray:
    """One crop of :func:`warp_crops`: (out_h, out_w, C) float32."""
    return warp_crops(image, [rect], out_w, out_h)[0]


def crops_to_batch(
    crops: np.ndarray, scale: float | np.ndarray, offset: float | np.ndarray
) -> np.ndarray:
    """(N, H, W, C) crops -> (N, C, H, W) float32 model batch ``crops * scale + offset``
    (``scale`` and ``offset`` scalars or broadcastable to (1, C, 1, 1)), in one pass."""
    batch = np.empty((crops.shape[0], crops.shape[3], *crops.shape[1:3]), dtype=np.float32)
    np.multiply(crops.transpose(0, 3, 1, 2), np.asarray(scale, dtype=np.float32), out=batch)
    batch += np.asarray(offset, dtype=np.float32)
    return batch
