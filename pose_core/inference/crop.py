"""Rotated-rectangle crops and the affine maps between crop and image pixels.

Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5``.
A crop is described by a :class:`CropRect` (centre, size, rotation in image pixels) and is
sampled to ``out_w x out_h`` pixels with bilinear interpolation; samples outside the image
are zero (black), as MediaPipe's ImageToTensor does with its zero border mode.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def warp_crop(image: np.ndarray, rect: CropRect, out_w: int, out_h: int) -> np.ndarray:
    """Sample ``rect`` out of ``image`` with bilinear interpolation.

    Args:
        image: (H, W, C) array (uint8 or float), RGB.
        rect: the region to crop, in image pixels.
        out_w, out_h: output size in pixels.

    Returns:
        (out_h, out_w, C) float32 array in the input's value range; zero outside the image.
    """
    matrix = crop_to_image_matrix(rect, out_w, out_h)
    ys, xs = np.meshgrid(np.arange(out_h) + 0.5, np.arange(out_w) + 0.5, indexing="ij")
    grid = np.stack([xs, ys], axis=-1)
    src = apply_affine(matrix, grid) - 0.5  # continuous -> index space
    return _bilinear_sample(np.asarray(image), src[..., 0], src[..., 1])


def _bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of (H, W, C) ``image`` at index-space ``x``, ``y`` of shape (h, w).

    Taps outside the image read zero. Only the sampled pixels are converted to float32.
    """
    height, width = image.shape[:2]
    flat = image.reshape(height * width, -1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0).astype(np.float32)[..., None]
    fy = (y - y0).astype(np.float32)[..., None]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        index = np.clip(yy, 0, height - 1) * width + np.clip(xx, 0, width - 1)
        values = np.take(flat, index, axis=0).astype(np.float32)
        inside = (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
        return values * inside[..., None]

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)
