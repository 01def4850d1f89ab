"""Fidelity of a compressed model to its parent: same crops, parent's output as pseudo truth.

Needs no labels, so it is measured on every dataset. Both pipelines run their landmark model on
the *same* crops: the ground-truth boxes when the image is labelled (the ``gt-boxes`` crop rule
of :mod:`pose_core.evaluation.protocol`), otherwise squares of the same rule around the people
the parent's detector finds. Reported:

- mean landmark error over the 17 COCO keypoints, in image pixels and in crop pixels (the
  image error scaled by ``crop_size / crop side``, i.e. pixels of the 256 x 256 model input);
- mean OKS of the student's keypoints against the parent's, every keypoint counted as labelled,
  the OKS area being the parent's person box area ``w x h``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pose_core.dataset_schema import IMAGE_SUFFIXES
from pose_core.evaluation.dataset import load_dataset, load_rgb
from pose_core.evaluation.oks import oks
from pose_core.evaluation.protocol import (
    DEFAULT_MAX_PEOPLE,
    GT_BOX_SCALE,
    PersonPoseLike,
    TopDownPipeline,
)
from pose_core.inference.crop import CropRect

FidelityInput = tuple[np.ndarray, Sequence[tuple[float, float, float, float]] | None]


@dataclass(frozen=True)
class FidelityReport:
    """Student vs parent on ``n_people`` crops (``None`` fields when there were none)."""

    n_people: int
    mean_error_px: float | None
    mean_error_crop_px: float | None
    mean_oks: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def fidelity_metrics(
    student: np.ndarray,
    parent: np.ndarray,
    parent_bboxes: np.ndarray,
    crop_sides: np.ndarray | None = None,
    crop_size: int = 256,
) -> FidelityReport:
    """Compare keypoints of the same people predicted by a student and its parent.

    Args:
        student: (N, 17, 2+) student keypoints in image pixels.
        parent: (N, 17, 2+) parent keypoints in image pixels (pseudo ground truth).
        parent_bboxes: (N, 4) parent person boxes ``[x, y, w, h]`` (OKS area = ``w * h``).
        crop_sides: (N,) side in image pixels of the square crop each person was cut from;
            ``None`` leaves the crop-pixel error out.
        crop_size: the model input side the crops were resized to.
    """
    student = np.asarray(student, dtype=np.float64).reshape(-1, 17, student.shape[-1])
    parent = np.asarray(parent, dtype=np.float64).reshape(-1, 17, parent.shape[-1])
    boxes = np.asarray(parent_bboxes, dtype=np.float64).reshape(-1, 4)
    if not (len(student) == len(parent) == len(boxes)):
        raise ValueError("student, parent and parent_bboxes need the same number of people")
    n = len(student)
    if n == 0:
        return FidelityReport(0, None, None, None)
    dist = np.linalg.norm(student[..., :2] - parent[..., :2], axis=-1)  # (N, 17)
    pseudo_gt = np.concatenate([parent[..., :2], np.full((n, 17, 1), 2.0)], axis=-1)
    similarities = [
        oks(student[i], pseudo_gt[i], float(boxes[i, 2] * boxes[i, 3])) for i in range(n)
    ]
    crop_error = None
    if crop_sides is not None:
        scale = crop_size / np.asarray(crop_sides, dtype=np.float64).reshape(-1, 1)
        crop_error = float((dist * scale).mean())
    return FidelityReport(
        n_people=n,
        mean_error_px=float(dist.mean()),
        mean_error_crop_px=crop_error,
        mean_oks=float(np.mean(similarities)),
    )


def measure_fidelity(
    student: TopDownPipeline,
    parent: TopDownPipeline,
    images: Iterable[FidelityInput],
    crop_size: int = 256,
    min_score: float = 0.5,
) -> FidelityReport:
    """Run both pipelines on the same crops of every image and compare (module docstring).

    Args:
        student, parent: pipelines (``predict`` / ``predict_in_rects``).
        images: ``(image, boxes)`` pairs: (H, W, 3) uint8 RGB and the labelled people's
            ``[x, y, w, h]`` boxes, or ``None`` for an unlabelled image (the parent's
            detector then finds the people); see :func:`fidelity_inputs`.
        crop_size: the landmark model's input side (for the crop-pixel error).
        min_score: person-score threshold of the parent's detector on unlabelled images.
    """
    student_kps: list[np.ndarray] = []
    parent_kps: list[np.ndarray] = []
    parent_boxes: list[tuple[float, float, float, float]] = []
    sides: list[float] = []
    for image, boxes in images:
        if boxes is None:
            found = parent.predict(image, max_people=DEFAULT_MAX_PEOPLE, min_score=min_score)
            boxes = [_bbox_of(p) for p in found]
        rects = [CropRect.square_around_box(*box, GT_BOX_SCALE) for box in boxes]
        if not rects:
            continue
        parent_poses = parent.predict_in_rects(image, rects)
        student_poses = student.predict_in_rects(image, rects)
        for rect, p_pose, s_pose in zip(rects, parent_poses, student_poses, strict=True):
            parent_kps.append(np.asarray(p_pose.keypoints, dtype=np.float64))
            student_kps.append(np.asarray(s_pose.keypoints, dtype=np.float64))
            parent_boxes.append(_bbox_of(p_pose))
            sides.append(rect.width)
    if not parent_kps:
        return FidelityReport(0, None, None, None)
    return fidelity_metrics(
        np.stack(student_kps),
        np.stack(parent_kps),
        np.array(parent_boxes),
        np.array(sides),
        crop_size,
    )


def fidelity_inputs(directory: str | Path) -> Iterator[FidelityInput]:
    """``(image, boxes)`` pairs for :func:`measure_fidelity` from a dataset directory.

    With ``annotations.json``: every image with the boxes of its labelled people (``None`` for
    an image without any, so the parent's detector is used). Without it: every image file of
    ``directory/images`` (or ``directory`` itself), sorted by name, with ``None``.
    Images are decoded one at a time.
    """
    directory = Path(directory)
    if (directory / "annotations.json").is_file():
        for record in load_dataset(directory):
            people = record.people_with_keypoints
            yield record.load(), ([p.bbox for p in people] if people else None)
        return
    folder = directory / "images" if (directory / "images").is_dir() else directory
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield load_rgb(path), None


def _bbox_of(pose: PersonPoseLike) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in pose.bbox)
    return (x, y, w, h)
