"""BlazePose person detector: letterbox -> SSD decoding -> weighted NMS -> image pixels.

Follows MediaPipe's pose detector graph: ImageToTensor (keep aspect ratio, zero border,
range [-1, 1]), TensorsToDetections (2254 anchors, 12 regressors, scales 224, sigmoid
scores clipped at 100), NonMaxSuppression (WEIGHTED, IoU 0.3), DetectionLetterboxRemoval.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pose_core.inference.anchors import generate_anchors
from pose_core.inference.crop import CropRect, apply_affine, crop_to_image_matrix, warp_crop
from pose_core.inference.types import Runner, sigmoid

DETECTOR_INPUT_SIZE = 224
NUM_DETECTOR_KEYPOINTS = 4
SCORE_CLIPPING_THRESHOLD = 100.0
DEFAULT_MIN_DETECTION_SCORE = 0.5  # MediaPipe Tasks' min_pose_detection_confidence
DEFAULT_NMS_IOU = 0.3


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


def preprocess_detector(image: np.ndarray) -> tuple[np.ndarray, CropRect]:
    """Letterbox an image into the detector's input.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        (1, 3, 224, 224) float32 in [-1, 1] (padding is -1, i.e. black), and the letterbox
        rectangle in image pixels.
    """
    rect = letterbox_rect(image.shape[1], image.shape[0])
    crop = warp_crop(image, rect, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE)
    tensor = crop * np.float32(2.0 / 255.0) - np.float32(1.0)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[None]), rect


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


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) xmin, ymin, xmax, ymax box with (M, 4) boxes; 0 where disjoint."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0.0, None) * np.clip(iy1 - iy0, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
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
    remaining = np.arange(len(detections))
    boxes, points, scores = [], [], []
    while remaining.size:
        best = remaining[0]
        overlap = box_iou(detections.boxes[best], detections.boxes[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = detections.scores[group]
        total = float(weights.sum())
        boxes.append((detections.boxes[group] * weights[:, None]).sum(axis=0) / total)
        points.append((detections.keypoints[group] * weights[:, None, None]).sum(axis=0) / total)
        scores.append(detections.scores[best])
        remaining = remaining[~overlap]
    if not scores:
        return detections
    return Detections(np.stack(boxes), np.stack(points), np.asarray(scores, dtype=np.float64))


def detections_to_image(detections: Detections, letterbox: CropRect) -> Detections:
    """Map normalised letterboxed detections to image pixels (removes the letterbox)."""
    size = DETECTOR_INPUT_SIZE
    matrix = crop_to_image_matrix(letterbox, size, size)
    boxes = apply_affine(matrix, detections.boxes.reshape(-1, 2, 2) * size).reshape(-1, 4)
    keypoints = apply_affine(matrix, detections.keypoints * size)
    return Detections(boxes, keypoints, detections.scores)


def detect_people(
    runner: Runner,
    image: np.ndarray,
    min_score: float = DEFAULT_MIN_DETECTION_SCORE,
    iou_threshold: float = DEFAULT_NMS_IOU,
) -> Detections:
    """Run the whole detector on one (H, W, 3) uint8 RGB image; detections in image pixels.

    ``runner`` maps (1, 3, 224, 224) to (regressors (1, 2254, 12), scores (1, 2254, 1)).
    """
    tensor, letterbox = preprocess_detector(image)
    outputs = runner(tensor)
    regressors, logits = np.asarray(outputs[0])[0], np.asarray(outputs[1])[0]
    decoded = decode_detections(regressors, logits, pose_anchors(), min_score)
    return detections_to_image(weighted_nms(decoded, iou_threshold), letterbox)
