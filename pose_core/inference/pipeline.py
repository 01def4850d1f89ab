"""Whole-image pose estimation: detector -> person ROIs -> keypoint model -> people."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from pose_core.inference.crop import CropRect
from pose_core.inference.detector import (
    DEFAULT_MIN_DETECTION_SCORE,
    DEFAULT_NMS_IOU,
    DEFAULT_TILE_FRACTION,
    detect_people,
)
from pose_core.inference.keypoint_model import KeypointModel
from pose_core.inference.roi import rois_from_detections
from pose_core.inference.types import PersonPose, Runner

DEFAULT_DUPLICATE_IOU = 0.6
SAME_FACE = 0.75


class PipelineError(ValueError):
    """The pipeline cannot run as asked (e.g. whole-image prediction without a detector)."""


class PosePipeline:
    """Detect people with the BlazePose detector, then estimate each one's keypoints.

    Args:
        landmark: the keypoint model run on each person crop.
        detector: the BlazePose detector runner; without one only :meth:`predict_in_rects`
            works.
        min_detection_score: detector score threshold (MediaPipe Tasks' default 0.5).
        nms_iou: weighted-NMS IoU threshold (MediaPipe: 0.3).
        tile_fraction: detector tile size (see
            :func:`~pose_core.inference.detector.detection_windows`); None runs MediaPipe's
            single full-image pass.
        duplicate_iou: people whose boxes overlap more than this are one person (the
            best-scoring one is kept).
    """

    def __init__(
        self,
        landmark: KeypointModel,
        detector: Runner | None,
        min_detection_score: float = DEFAULT_MIN_DETECTION_SCORE,
        nms_iou: float = DEFAULT_NMS_IOU,
        tile_fraction: float | None = DEFAULT_TILE_FRACTION,
        duplicate_iou: float = DEFAULT_DUPLICATE_IOU,
    ) -> None:
        self.landmark = landmark
        self.detector = detector
        self.min_detection_score = min_detection_score
        self.nms_iou = nms_iou
        self.tile_fraction = tile_fraction
        self.duplicate_iou = duplicate_iou

    def detect_rois(
        self, image: np.ndarray, max_people: int = 10, tiled: bool = True
    ) -> list[CropRect]:
        """Person crops of a (H, W, 3) uint8 RGB image, best detection first, at most
        ``max_people``. ``tiled=False`` runs only MediaPipe's single full-image pass (faster;
        finds fewer people in group photos)."""
        if self.detector is None:
            raise PipelineError("this model has no person detector: give person boxes instead")
        tile_fraction = self.tile_fraction if tiled else None
        detections = detect_people(
            self.detector, image, self.min_detection_score, self.nms_iou, tile_fraction
        )
        return rois_from_detections(detections.keypoints[:max_people])

    def predict_timed(
        self, image: np.ndarray, max_people: int = 10, min_score: float = 0.5, tiled: bool = True
    ) -> tuple[list[PersonPose], dict[str, float]]:
        """:meth:`predict` plus seconds per stage: ``detect``, ``landmarks``, ``total``."""
        _check_image(image)
        start = time.perf_counter()
        rects = self.detect_rois(image, max_people, tiled) if max_people > 0 else []
        detected = time.perf_counter()
        people = self.landmark.estimate(image, rects)
        done = time.perf_counter()
        kept = remove_duplicates([p for p in people if p.score >= min_score], self.duplicate_iou)
        timings = {"detect": detected - start, "landmarks": done - detected, "total": done - start}
        return kept, timings

    def predict(
        self, image: np.ndarray, max_people: int = 10, min_score: float = 0.5, tiled: bool = True
    ) -> list[PersonPose]:
        """People in a (H, W, 3) uint8 RGB image, highest score first.

        At most ``max_people`` detections are examined; people whose score (pose presence)
        is below ``min_score`` are dropped; ``tiled``: see :meth:`detect_rois`.
        """
        return self.predict_timed(image, max_people, min_score, tiled)[0]

    def predict_in_rects(self, image: np.ndarray, rects: Sequence[CropRect]) -> list[PersonPose]:
        """Top-down estimation in given crops (e.g. ground-truth boxes); one person per rect,
        in ``rects`` order, no score filtering."""
        _check_image(image)
        return self.landmark.estimate(image, list(rects))


def box_iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


FACE_KEYPOINTS = slice(0, 5)  # nose, eyes, ears in COCO-17 order


def same_face(better: PersonPose, other: PersonPose, max_ratio: float = SAME_FACE) -> bool:
    """Whether two people share a face: their face-keypoint centroids are closer than
    ``max_ratio`` x the better one's face size (largest distance between its face points).

    BlazePose's detector is anchored on faces, so two crops of one person (from different
    detector windows) can yield different bodies around the same face.
    """
    face = better.keypoints[FACE_KEYPOINTS, :2].astype(np.float64)
    size = max(float(np.max(np.linalg.norm(face[:, None] - face[None], axis=-1))), 1.0)
    distance = np.linalg.norm(face.mean(axis=0) - other.keypoints[FACE_KEYPOINTS, :2].mean(axis=0))
    return bool(distance < max_ratio * size)


def remove_duplicates(people: Sequence[PersonPose], max_iou: float) -> list[PersonPose]:
    """People sorted by score, dropping any that overlaps a better one by box IoU > max_iou
    or shares its face (:func:`same_face`)."""
    kept: list[PersonPose] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(
            box_iou_xywh(person.bbox, other.bbox) <= max_iou and not same_face(other, person)
            for other in kept
        ):
            kept.append(person)
    return kept


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PipelineError(
            f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PipelineError("empty image")
