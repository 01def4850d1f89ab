"""Evaluation of a pose pipeline over a labelled dataset, in two modes.

``gt-boxes`` (top-down protocol): one crop per annotated person (non-crowd, at least one
labelled keypoint): a square of side ``1.5 x max(w, h)`` centred on the ground-truth box, no
rotation, resized to the landmark model's input (256 x 256 for BlazePose); see
:data:`GT_BOX_CROP_RULE`. The pipeline's landmark model runs on exactly these crops
(``predict_in_rects``), the detector does not run. This is the protocol of
``docs/MEASURED.md``.

``detector`` (end to end): the pipeline's own detector, ROI and landmark model
(``predict``); predictions are matched to ground-truth people for PCK / pixel errors by
greedy OKS (see :func:`match_by_oks`); COCO AP does its own matching.

Every prediction is scored ``person score x mean keypoint score`` (:func:`prediction_score`)
in both modes; AP depends on this ranking, so it is kept stable.

AP comes with a 95% bootstrap interval (``ap_ci``, :mod:`pose_core.evaluation.bootstrap`):
1000 seeded resamples of the people (ground-truth-box mode) or of the images (detector mode,
where a false positive belongs to an image, not to a person).

Coordinates: the pipeline returns continuous image coordinates (pixel ``i`` spans
``[i, i + 1)``), while COCO keypoint labels are pixel indices (pixel ``i`` is at ``i``), so
predicted keypoints are shifted by -0.5 px before they meet the labels (as detectron2 does when
it writes COCO results). COCO boxes are continuous already and are used as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from pose_core.evaluation.bootstrap import ApInterval, ap_interval
from pose_core.evaluation.dataset import ImageRecord, KeypointDataset, load_dataset
from pose_core.evaluation.oks import KeypointPrediction, coco_keypoint_metrics, oks
from pose_core.evaluation.pck import (
    PCK_NORMALIZER,
    bbox_normalizer,
    keypoint_errors,
    pck,
    summarize_errors,
)
from pose_core.inference.crop import CropRect

logger = logging.getLogger(__name__)

GT_BOX_SCALE = 1.5
GT_BOX_CROP_RULE = (
    "ground-truth box: square crop of side 1.5 x max(w, h), centred on the box, "
    "no rotation, resized to the model input (256x256)"
)
DETECTOR_CROP_RULE = "detector: the pipeline's own person detector and ROI (end to end)"
SCORE_RULE = "person score x mean keypoint score"
PCK_THRESHOLD = 0.2
MATCH_MIN_OKS = 0.1  # detector mode: a prediction farther than this from every person is unmatched
COCO_PIXEL_OFFSET = 0.5  # continuous coordinates -> COCO keypoint pixel indices
DEFAULT_MAX_PEOPLE = 20
DETECTOR_MIN_SCORE = 0.0  # COCO keypoint AP counts at most 20 detections per image


class EvaluationMode(StrEnum):
    GT_BOXES = "gt-boxes"
    DETECTOR = "detector"


class PersonPoseLike(Protocol):
    """What the evaluation reads from a predicted person (``PersonPose`` of the pipeline)."""

    @property
    def bbox(self) -> Sequence[float]:
        """``(x, y, w, h)`` in image pixels."""
        ...

    @property
    def score(self) -> float: ...

    @property
    def keypoints(self) -> np.ndarray:
        """(17, 3) ``(x, y, score)`` in image pixels, COCO-17 order."""
        ...


class TopDownPipeline(Protocol):
    """The two entry points of ``pose_core.inference.pipeline.PosePipeline`` used here."""

    def predict(
        self, image: np.ndarray, max_people: int = ..., min_score: float = ...
    ) -> Sequence[PersonPoseLike]: ...

    def predict_in_rects(
        self, image: np.ndarray, rects: Sequence[CropRect]
    ) -> Sequence[PersonPoseLike]: ...


class EvaluationReport(BaseModel):
    """Accuracy of one pipeline on one dataset in one mode (JSON-able via :meth:`to_dict`)."""

    model_config = ConfigDict(frozen=True)

    mode: EvaluationMode
    crop_rule: str
    score_rule: str = SCORE_RULE
    n_images: int
    n_people: int
    n_predictions: int
    n_matched: int
    ap: float
    ap_ci: ApInterval
    ap50: float
    ap75: float
    ar: float
    pck: float | None
    pck_threshold: float = PCK_THRESHOLD
    pck_normalizer: str = PCK_NORMALIZER
    mean_error_px: float | None
    per_keypoint_error_px: dict[str, float | None]
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


ProgressCallback = Callable[[int, int], None]


def evaluate_dataset(
    pipeline: TopDownPipeline,
    dataset_dir: str | Path,
    mode: EvaluationMode | str = EvaluationMode.GT_BOXES,
    *,
    min_score: float = DETECTOR_MIN_SCORE,
    progress: ProgressCallback | None = None,
) -> EvaluationReport:
    """Evaluate ``pipeline`` on the COCO-keypoints dataset in ``dataset_dir``.

    Args:
        pipeline: a ``PosePipeline`` (or anything with its ``predict`` / ``predict_in_rects``).
        dataset_dir: directory with ``annotations.json`` and ``images/``.
        mode: ``"gt-boxes"`` or ``"detector"`` (module docstring).
        min_score: detector mode only: the pipeline's person-score threshold (default 0: AP
            ranks every person the detector finds, a threshold can only lower recall).
        progress: called as ``progress(done, total)`` after each image.
    """
    return evaluate(
        pipeline, load_dataset(dataset_dir), mode, min_score=min_score, progress=progress
    )


def evaluate(
    pipeline: TopDownPipeline,
    dataset: KeypointDataset,
    mode: EvaluationMode | str = EvaluationMode.GT_BOXES,
    *,
    min_score: float = DETECTOR_MIN_SCORE,
    progress: ProgressCallback | None = None,
) -> EvaluationReport:
    """Same as :func:`evaluate_dataset` on an already loaded dataset."""
    mode = EvaluationMode(mode)
    start = time.perf_counter()
    predictions: list[KeypointPrediction] = []
    prediction_units: list[int] = []  # bootstrap unit: person id (gt-boxes) or image id
    gt_units: dict[int, int] = {}
    error_rows: list[np.ndarray] = []
    normalizers: list[float] = []
    n_matched = 0
    for done, record in enumerate(dataset.images, start=1):
        image = record.load()
        people = record.people_with_keypoints
        if mode is EvaluationMode.GT_BOXES:
            rects = [CropRect.square_around_box(*p.bbox, GT_BOX_SCALE) for p in people]
            poses = list(pipeline.predict_in_rects(image, rects)) if rects else []
            if len(poses) != len(rects):
                raise RuntimeError(
                    f"predict_in_rects returned {len(poses)} people for {len(rects)} rects"
                )
            pairs = list(enumerate(range(len(poses))))
            prediction_units.extend(p.id for p in people)
            gt_units.update((p.id, p.id) for p in people)
        else:
            poses = list(
                pipeline.predict(image, max_people=DEFAULT_MAX_PEOPLE, min_score=min_score)
            )
            pairs = match_by_oks(record, poses)
            prediction_units.extend(record.id for _ in poses)
            gt_units.update((p.id, record.id) for p in record.annotations)
        predictions.extend(
            KeypointPrediction(record.id, coco_keypoints(p), prediction_score(p)) for p in poses
        )
        rows, matched = _person_errors(record, poses, pairs)
        error_rows.append(rows)
        normalizers.extend(bbox_normalizer(np.array([p.bbox for p in people])).tolist())
        n_matched += matched
        if progress is not None:
            progress(done, len(dataset.images))

    metrics = coco_keypoint_metrics(dataset.coco, predictions)
    unit = "person" if mode is EvaluationMode.GT_BOXES else "image"
    interval = ap_interval(metrics, prediction_units, gt_units, unit=unit)
    errors = np.concatenate(error_rows) if error_rows else np.zeros((0, 17))
    summary = summarize_errors(errors)
    pck_value = pck(errors, np.asarray(normalizers), PCK_THRESHOLD)
    report = EvaluationReport(
        mode=mode,
        crop_rule=GT_BOX_CROP_RULE if mode is EvaluationMode.GT_BOXES else DETECTOR_CROP_RULE,
        n_images=len(dataset.images),
        n_people=dataset.num_people,
        n_predictions=len(predictions),
        n_matched=n_matched,
        ap=metrics.ap,
        ap_ci=interval,
        ap50=metrics.ap50,
        ap75=metrics.ap75,
        ar=metrics.ar,
        pck=None if np.isnan(pck_value) else pck_value,
        mean_error_px=summary.mean,
        per_keypoint_error_px=summary.per_keypoint,
        wall_time_s=time.perf_counter() - start,
    )
    logger.info(
        "evaluation %s: AP %.4f (95%% CI %.4f-%.4f) on %d people",
        mode.value,
        report.ap,
        interval.low,
        interval.high,
        report.n_people,
    )
    return report


def prediction_score(pose: PersonPoseLike) -> float:
    """Ranking score of a predicted person: its score x the mean of its 17 keypoint scores."""
    keypoint_scores = np.asarray(pose.keypoints, dtype=np.float64)[:, 2]
    return float(pose.score) * float(keypoint_scores.mean())


def coco_keypoints(pose: PersonPoseLike) -> np.ndarray:
    """(17, 3) keypoints of ``pose`` in COCO's pixel-index convention (x, y shifted by -0.5)."""
    keypoints = np.array(pose.keypoints, dtype=np.float64).reshape(17, 3)
    keypoints[:, :2] -= COCO_PIXEL_OFFSET
    return keypoints


def match_by_oks(
    record: ImageRecord, poses: Sequence[PersonPoseLike], min_oks: float = MATCH_MIN_OKS
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of predictions to the image's labelled people.

    Pairs are taken in decreasing OKS order; a pair needs ``OKS >= min_oks``.

    Returns:
        ``(person_index, pose_index)`` pairs, ``person_index`` into
        ``record.people_with_keypoints``.
    """
    people = record.people_with_keypoints
    candidates = []
    for i, person in enumerate(people):
        for j, pose in enumerate(poses):
            similarity = oks(coco_keypoints(pose), person.keypoints, person.area)
            if similarity >= min_oks:
                candidates.append((similarity, i, j))
    candidates.sort(key=lambda c: -c[0])
    used_people: set[int] = set()
    used_poses: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i not in used_people and j not in used_poses:
            used_people.add(i)
            used_poses.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _person_errors(
    record: ImageRecord, poses: Sequence[PersonPoseLike], pairs: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, int]:
    """(P, 17) pixel errors of the image's labelled people: ``nan`` unlabelled, ``inf`` missed."""
    people = record.people_with_keypoints
    gt = np.array([p.keypoints for p in people]).reshape(len(people), 17, 3)
    rows = np.where(gt[..., 2] > 0, np.inf, np.nan)
    for i, j in pairs:
        pred = coco_keypoints(poses[j])[None]
        rows[i] = keypoint_errors(pred, gt[i : i + 1])[0]
    return rows, len(pairs)
