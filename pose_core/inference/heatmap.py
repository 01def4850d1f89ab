"""Top-down heatmap keypoint models (bring-your-own ONNX): crops -> N x K x H x W -> people.

Decoding: argmax per heatmap, refined to sub-pixel precision with a second-order Taylor
step on the log heatmap (DARK), falling back to a quarter-pixel step toward the higher
neighbour where the log heatmap is not locally concave; score = heatmap maximum.
Heatmap index coordinates are scaled to input index coordinates by input/heatmap size
(MMPose's convention), then mapped back to the image through the crop's affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from pose_core.inference.crop import (
    CropRect,
    apply_affine,
    crop_to_image_matrix,
    crops_to_batch,
    warp_crops,
)
from pose_core.inference.types import PersonPose, Runner, keypoints_box
from pose_core.keypoints import COCO17_NAMES

ChannelOrder = Literal["rgb", "bgr"]
_EPS = 1e-10


class HeatmapModelError(ValueError):
    """A heatmap model's description is inconsistent (e.g. COCO keypoints missing)."""


def coco17_indices(keypoint_names: Sequence[str] | Literal["coco17"]) -> list[int]:
    """For each COCO-17 keypoint, its channel in a model with ``keypoint_names``.

    Raises:
        HeatmapModelError: a COCO-17 name is missing.
    """
    if keypoint_names == "coco17":
        return list(range(len(COCO17_NAMES)))
    names = [name.strip().lower() for name in keypoint_names]
    missing = [name for name in COCO17_NAMES if name not in names]
    if missing:
        raise HeatmapModelError(f"keypoint names lack the COCO-17 keypoints {missing}")
    return [names.index(name) for name in COCO17_NAMES]


def fit_rect_to_aspect(rect: CropRect, width: int, height: int) -> CropRect:
    """Enlarge ``rect`` along one side so that it has the aspect ratio ``width / height``."""
    target = width / height
    if rect.width / rect.height < target:
        return CropRect(rect.cx, rect.cy, rect.height * target, rect.height, rect.rotation)
    return CropRect(rect.cx, rect.cy, rect.width, rect.width / target, rect.rotation)


def decode_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peaks of heatmaps.

    Args:
        heatmaps: (N, K, H, W) float.

    Returns:
        (N, K, 2) float64 x, y in heatmap index coordinates (cell centres are integers),
        and (N, K) float64 scores (the maxima).
    """
    maps = np.asarray(heatmaps, dtype=np.float64)
    n, k, h, w = maps.shape
    flat = maps.reshape(n, k, h * w)
    best = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    y, x = np.divmod(best, w)
    coords = np.stack([x, y], axis=-1).astype(np.float64)
    for i in range(n):
        for j in range(k):
            coords[i, j] += _refine(maps[i, j], int(x[i, j]), int(y[i, j]))
    return coords, scores


def _refine(heatmap: np.ndarray, x: int, y: int) -> np.ndarray:
    """Sub-pixel offset (dx, dy) of the peak at integer (x, y) of one (H, W) heatmap."""
    h, w = heatmap.shape
    if not (1 <= x < w - 1 and 1 <= y < h - 1):
        return _quarter_offset(heatmap, x, y)
    log = np.log(np.maximum(heatmap[y - 1 : y + 2, x - 1 : x + 2], _EPS))
    dx = 0.5 * (log[1, 2] - log[1, 0])
    dy = 0.5 * (log[2, 1] - log[0, 1])
    dxx = log[1, 2] - 2 * log[1, 1] + log[1, 0]
    dyy = log[2, 1] - 2 * log[1, 1] + log[0, 1]
    dxy = 0.25 * (log[2, 2] - log[2, 0] - log[0, 2] + log[0, 0])
    hessian = np.array([[dxx, dxy], [dxy, dyy]])
    if dxx < 0 and np.linalg.det(hessian) > 0:  # locally concave: a real maximum
        offset = -np.linalg.solve(hessian, np.array([dx, dy]))
        if np.all(np.abs(offset) <= 1.0):
            return offset
    return _quarter_offset(heatmap, x, y)


def _quarter_offset(heatmap: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = heatmap.shape
    offset = np.zeros(2)
    if 0 < x < w - 1:
        offset[0] = 0.25 * np.sign(heatmap[y, x + 1] - heatmap[y, x - 1])
    if 0 < y < h - 1:
        offset[1] = 0.25 * np.sign(heatmap[y + 1, x] - heatmap[y - 1, x])
    return offset


class HeatmapModel:
    """A top-down heatmap model as a :class:`~pose_core.inference.keypoint_model.KeypointModel`.

    Args:
        runner: maps (N, 3, input_h, input_w) normalised crops to (N, K, H, W) heatmaps
            (first output).
        input_size: (width, height) of the model input.
        mean, std: per-channel normalisation in [0, 1] pixel units, in the model's channel
            order: ``input = (pixel / 255 - mean) / std``.
        channel_order: ``"rgb"`` or ``"bgr"``.
        keypoint_names: the K channel names, or ``"coco17"``; must include the COCO-17 names.
    """

    def __init__(
        self,
        runner: Runner,
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        channel_order: ChannelOrder,
        keypoint_names: Sequence[str] | Literal["coco17"],
    ) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise HeatmapModelError(f"channel order must be rgb or bgr, not {channel_order!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise HeatmapModelError("mean and std need 3 values each, std positive")
        self.runner = runner
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.channel_order = channel_order
        self.coco_channels = coco17_indices(keypoint_names)

    def preprocess(
        self, image: np.ndarray, rects: Sequence[CropRect]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and N rects -> (N, 3, input_h, input_w) float32 batch and
        (N, 2, 3) crop-to-image matrices (rects enlarged to the input aspect ratio)."""
        width, height = self.input_size
        fitted = [fit_rect_to_aspect(rect, width, height) for rect in rects]
        crops = warp_crops(image, fitted, width, height)
        if self.channel_order == "bgr":
            crops = crops[..., ::-1]
        # (pixel / 255 - mean) / std as one multiply-add
        batch = crops_to_batch(crops, 1.0 / (255.0 * self.std), -self.mean / self.std)
        matrices = np.stack([crop_to_image_matrix(rect, width, height) for rect in fitted])
        matrices = matrices.reshape(len(rects), 2, 3)
        return batch, matrices

    def decode(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The runner's outputs -> (N, 17, 2) COCO-17 keypoints in continuous input pixels and
        (N, 17) scores."""
        heatmaps = np.asarray(outputs[0])
        if heatmaps.ndim != 4:
            raise HeatmapModelError(f"expected N x K x H x W heatmaps, got {heatmaps.shape}")
        coords, scores = decode_heatmaps(heatmaps[:, self.coco_channels])
        width, height = self.input_size
        hm_h, hm_w = heatmaps.shape[2:]
        # heatmap index -> input index (MMPose) -> continuous input pixels (+ 0.5)
        return coords * np.array([width / hm_w, height / hm_h]) + 0.5, scores

    def estimate(self, image: np.ndarray, rects: Sequence[CropRect]) -> list[PersonPose]:
        """People from the crops ``rects`` of a (H, W, 3) uint8 RGB image, in ``rects`` order."""
        if not rects:
            return []
        batch, matrices = self.preprocess(image, rects)
        input_xy, scores = self.decode(self.runner(batch))
        return _people_in_image(input_xy, scores, matrices, image.shape[1], image.shape[0])


def _people_in_image(
    input_xy: np.ndarray,
    scores: np.ndarray,
    matrices: np.ndarray,
    image_width: int,
    image_height: int,
) -> list[PersonPose]:
    """(N, K, 2) keypoints in continuous input pixels, (N, K) scores and the (N, 2, 3)
    crop-to-image matrices -> N people in image pixels (score = mean keypoint score)."""
    people = []
    for i, matrix in enumerate(matrices):
        image_xy = apply_affine(matrix, input_xy[i])
        bbox, clipped = keypoints_box(image_xy, image_width, image_height)
        keypoints = np.concatenate([clipped, scores[i][:, None]], axis=1).astype(np.float32)
        people.append(PersonPose(bbox=bbox, score=float(scores[i].mean()), keypoints=keypoints))
    return people
