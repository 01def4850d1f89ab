"""BlazePose person detector: letterbox -> SSD decoding -> weighted NMS -> image pixels.

Follows MediaPipe's pose detector graph: ImageToTensor (keep aspect ratio, zero border,
range [-1, 1]), TensorsToDetections (2254 anchors, 12 regressors, scales 224, sigmoid
scores clipped at 100), NonMaxSuppression (WEIGHTED, IoU 0.3), DetectionLetterboxRemoval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pose_core.inference.anchors import generate_anchors
from pose_core.inference.crop import (
    CropRect,
    apply_affine,
    crop_to_image_matrix,
    crops_to_batch,
    warp_crops,
)
from pose_core.inference.types import Runner, sigmoid

DETECTOR_INPUT_SIZE = 224
NUM_DETECTOR_KEYPOINTS = 4
SCORE_CLIPPING_THRESHOLD = 100.0
DEFAULT_MIN_DETECTION_SCORE = 0.5  # MediaPipe Tasks' min_pose_detection_confidence
DEFAULT_NMS_IOU = 0.3
DEFAULT_TILE_FRACTION = 0.65  # tile side / short image side (our addition)
DEFAULT_TILE_STEP = 0.75  # largest step between tiles / tile side
MAX_TILES_PER_AXIS = 5
SAME_PERSON = 0.35  # hip-centre distance / body radius under which detections merge


@dataclass(frozen=True)
class Detections:
    """Detections of one image (M of them).

    Attributes:
        boxes: (M, 4) float64 xmin, ymin, xmax, ymax (the detected face box).
        keypoints: (M, 4, 2) float64 x, y: 0 hip centre, 1 full-body size/rotation point,
            2 shoulder centre, 3 upper-body size/rotation point.
        scores: (M,) float64 in [0, 1].
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray | slice) -> Detections:
        """Subset (or reorder) the detections."""
        return Detections(self.boxes[index], self.keypoints[index], self.scores[index])


@lru_cache(maxsize=1)
def pose_anchors() -> np.ndarray:
    """The detector's (2254, 4) anchors: x_center, y_center, width, height (normalised)."""
    anchors = generate_anchors()
    anchors.setflags(write=False)
    return anchors


def letterbox_rect(width: int, height: int) -> CropRect:
    """The square region, centred on the image, that the detector sees (padding included)."""
    side = float(max(width, height))
    return CropRect(width / 2.0, height / 2.0, side, side, 0.0)


def detection_windows(
    width: int,
    height: int,
    tile_fraction: float | None = DEFAULT_TILE_FRACTION,
    tile_step: float = DEFAULT_TILE_STEP,
) -> list[CropRect]:
    """Square windows the detector runs on: the whole letterboxed image first (MediaPipe),
    then, unless ``tile_fraction`` is None, overlapping tiles of side ``tile_fraction *
    min(width, height)`` covering the image with steps of at most ``tile_step`` x the tile side
    (at most ``MAX_TILES_PER_AXIS`` per axis: very elongated images get sparser tiles).

    The full-image pass alone finds one or two people: BlazePose's detector was trained on
    images where a person is large. Tiles let it see the others at a closer scale.
    """
    windows = [letterbox_rect(width, height)]
    if tile_fraction is None:
        return windows
    side = tile_fraction * min(width, height)

    def centres(extent: int) -> np.ndarray:
        count = int(np.ceil(max(extent - side, 0.0) / (side * tile_step))) + 1
        count = min(count, MAX_TILES_PER_AXIS)
        return (
            np.linspace(side / 2.0, extent - side / 2.0, count)
            if count > 1
            else np.array([extent / 2.0])
        )

    for cy in centres(height):
        for cx in centres(width):
            windows.append(CropRect(float(cx), float(cy), side, side, 0.0))
    return windows


def preprocess_detector(image: np.ndarray, windows: Sequence[CropRect]) -> np.ndarray:
    """Cut detector inputs out of an image.

    Args:
        image: (H, W, 3) uint8 RGB.
        windows: N square regions in image pixels (see :func:`detection_windows`).

    Returns:
        (N, 3, 224, 224) float32 in [-1, 1]; outside the image is -1 (black), as MediaPipe's
        zero border.
    """
    size = DETECTOR_INPUT_SIZE
    return crops_to_batch(warp_crops(image, windows, size, size), 2.0 / 255.0, -1.0)


def decode_detections(
    regressors: np.ndarray,
    score_logits: np.ndarray,
    anchors: np.ndarray,
    min_score: float = DEFAULT_MIN_DETECTION_SCORE,
) -> Detections:
    """Decode raw SSD outputs of one image, keeping those scoring at least ``min_score``.

    Args:
        regressors: (A, 12) x_center, y_center, w, h, then 4 keypoints x, y, all in input
            pixels relative to the anchor.
        score_logits: (A,) or (A, 1) raw logits.
        anchors: (A, 4) from :func:`pose_anchors`.
        min_score: sigmoid score threshold.

    Returns:
        Detections in normalised letterboxed coordinates ([0, 1] over the 224 x 224 input),
        sorted by score, highest first.
    """
    logits = np.clip(score_logits.reshape(-1), -SCORE_CLIPPING_THRESHOLD, SCORE_CLIPPING_THRESHOLD)
    scores = sigmoid(logits).astype(np.float64)
    keep = np.flatnonzero(scores >= min_score)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    raw = regressors.reshape(-1, 4 + 2 * NUM_DETECTOR_KEYPOINTS)[keep].astype(np.float64)
    anchor = anchors[keep].astype(np.float64)
    scale = float(DETECTOR_INPUT_SIZE)
    centre = raw[:, 0:2] / scale * anchor[:, 2:4] + anchor[:, 0:2]
    size = raw[:, 2:4] / scale * anchor[:, 2:4]
    boxes = np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1)
    points = raw[:, 4:].reshape(-1, NUM_DETECTOR_KEYPOINTS, 2)
    keypoints = points / scale * anchor[:, None, 2:4] + anchor[:, None, 0:2]
    return Detections(boxes, keypoints, scores[keep])


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """(M, M) IoU of (M, 4) xmin, ymin, xmax, ymax boxes with each other; 0 where disjoint."""
    low = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    union = areas[:, None] + areas[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(detections: Detections, iou_threshold: float = DEFAULT_NMS_IOU) -> Detections:
    """MediaPipe's WEIGHTED non-maximum suppression.

    The best remaining detection gathers every remaining one whose box overlaps it with
    IoU > ``iou_threshold`` (itself included); the output is their score-weighted mean box
    and keypoints, with the best one's score. Input must be sorted by score (as
    :func:`decode_detections` returns it).

    Returns:
        The merged detections, sorted by score.
    """
    count = len(detections)
    if count == 0:
        return detections
    overlaps = pairwise_iou(detections.boxes) > iou_threshold
    remaining = np.ones(count, dtype=bool)
    weights = []  # one row per group: each member's score, 0 elsewhere
    leaders = []
    while remaining.any():
        best = int(np.argmax(remaining))
        group = remaining & overlaps[best]
        group[best] = True
        weights.append(np.where(group, detections.scores, 0.0))
        leaders.append(best)
        remaining &= ~group
    matrix = np.stack(weights)
    matrix /= matrix.sum(axis=1, keepdims=True)
    boxes = matrix @ detections.boxes
    points = np.einsum("gm,mkd->gkd", matrix, detections.keypoints)
    return Detections(boxes, points, detections.scores[leaders])


def _no_detections() -> Detections:
    return Detections(np.zeros((0, 4)), np.zeros((0, NUM_DETECTOR_KEYPOINTS, 2)), np.zeros(0))


def detections_to_image(detections: Detections, letterbox: CropRect) -> Detections:
    """Map normalised letterboxed detections to image pixels (removes the letterbox)."""
    size = DETECTOR_INPUT_SIZE
    matrix = crop_to_image_matrix(letterbox, size, size)
    boxes = apply_affine(matrix, detections.boxes.reshape(-1, 2, 2) * size).reshape(-1, 4)
    keypoints = apply_affine(matrix, detections.keypoints * size)
    return Detections(boxes, keypoints, detections.scores)


def merge_windows(detections: Sequence[Detections], same_person: float = SAME_PERSON) -> Detections:
    """Merge image-pixel detections found in different windows, best score first.

    Window detections have fixed-size boxes (relative to their window), so boxes do not
    tell duplicates apart across scales; two detections are the same person when their hip
    centres (keypoint 0) are closer than ``same_person`` x the larger body radius (distance
    from keypoint 0 to keypoint 1). The best-scoring one is kept.
    """
    merged = Detections(
        np.concatenate([d.boxes.reshape(-1, 4) for d in detections]),
        np.concatenate([d.keypoints.reshape(-1, NUM_DETECTOR_KEYPOINTS, 2) for d in detections]),
        np.concatenate([d.scores.reshape(-1) for d in detections]),
    )
    order = np.argsort(-merged.scores, kind="stable")
    centres = merged.keypoints[:, 0]
    radius = np.linalg.norm(merged.keypoints[:, 1] - centres, axis=1)
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    duplicate = distance < same_person * np.maximum(radius[:, None], radius[None])
    kept: list[int] = []
    for i in order:
        if not duplicate[i, kept].any():
            kept.append(int(i))
    return merged.take(np.asarray(kept, dtype=np.int64))


def detect_people(
    runner: Runner,
    image: np.ndarray,
    min_score: float = DEFAULT_MIN_DETECTION_SCORE,
    iou_threshold: float = DEFAULT_NMS_IOU,
    tile_fraction: float | None = DEFAULT_TILE_FRACTION,
) -> Detections:
    """Run the detector on one (H, W, 3) uint8 RGB image; detections in image pixels, best
    first.

    ``runner`` maps (N, 3, 224, 224) to (regressors (N, 2254, 12), scores (N, 2254, 1)).
    With ``tile_fraction=None`` this is exactly MediaPipe's single full-image pass;
    otherwise tiles are added (see :func:`detection_windows`) and merged
    (:func:`merge_windows`).
    """
    windows = detection_windows(image.shape[1], image.shape[0], tile_fraction)
    outputs = runner(preprocess_detector(image, windows))
    regressors, logits = np.asarray(outputs[0]), np.asarray(outputs[1])
    # score >= min_score <=> logit >= logit(min_score): windows without a candidate are skipped
    threshold = np.log(min_score / (1.0 - min_score)) if 0.0 < min_score < 1.0 else None
    hit = (
        (logits.reshape(len(windows), -1) >= threshold).any(axis=1)
        if threshold is not None
        else np.ones(len(windows), dtype=bool)
    )
    found = [
        detections_to_image(
            weighted_nms(
                decode_detections(regressors[i], logits[i], pose_anchors(), min_score),
                iou_threshold,
            ),
            window,
        )
        for i, window in enumerate(windows)
        if hit[i]
    ]
    if not found:
        return _no_detections()
    return found[0] if len(windows) == 1 else merge_windows(found)
