"""Person crops of COCO-style dataset dirs (``annotations.json`` + ``images/``): ground-truth-box
crops where labelled, detector crops (or a whole-image square when no detector is given)
otherwise, with deterministic augmentation (scale, shift, rotation, horizontal flip with
left/right swap of the targets, colour jitter) -> :class:`~pose_core.compression.data.CropSet`;
:func:`build_split` holds whole images out (-> :class:`~pose_core.compression.data.HeldOut`);
:func:`training_crops` is what the compress and optimize jobs build."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pose_core.compression.pose_format import CropFormat
from pose_core.dataset_schema import IMAGE_SUFFIXES
from pose_core.inference.crop import (
    CropRect,
    apply_affine,
    crop_to_image_matrix,
    invert_affine,
    warp_crop,
)
from pose_core.inference.heatmap import fit_rect_to_aspect
from pose_core.keypoints import BLAZEPOSE33_FLIP_PAIRS, BLAZEPOSE33_TO_COCO17

if TYPE_CHECKING:

    from pose_core.inference.types import Runner

from pose_core.compression.data import (
    CROP_SIZE,
    NUM_BODY_LANDMARKS,
    AugmentConfig,
    CropSet,
    CropSource,
    Detector,
    HeldOut,
)

logger = logging.getLogger(__name__)


def coco_keypoints_to_blazepose33(keypoints: Sequence[float]) -> np.ndarray:
    """COCO-17 flat ``[x, y, v] * 17`` -> (33, 3) BlazePose-indexed array (v=0 where unmapped).

    COCO keypoint coordinates are taken as continuous pixel coordinates.
    """
    coco = np.asarray(keypoints, dtype=np.float32).reshape(17, 3)
    out = np.zeros((NUM_BODY_LANDMARKS, 3), np.float32)
    for coco_idx, bp_idx in enumerate(BLAZEPOSE33_TO_COCO17):
        out[bp_idx] = coco[coco_idx]
    return out


def load_crop_sources(
    dataset_dir: Path, *, box_scale: float = 1.5, detect: Detector | None = None
) -> list[CropSource]:
    """Person crops of one dataset dir.

    With ``annotations.json``: one crop per annotation that has keypoints (square, side
    ``box_scale * max(w, h)`` around the ground-truth box). Images without any such annotation,
    or every image of a dir without annotations, get detector crops -- or, with no detector,
    one whole-image square crop (still useful for label-free distillation and calibration).
    """
    images_dir = dataset_dir / "images"
    ann_path = dataset_dir / "annotations.json"
    sources: list[CropSource] = []
    labelled_images: set[str] = set()
    if ann_path.exists():
        coco = json.loads(ann_path.read_text())
        files = {img["id"]: img["file_name"] for img in coco["images"]}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) <= 0:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 1 or h <= 1:
                continue
            name = files[ann["image_id"]]
            labelled_images.add(name)
            sources.append(
                CropSource(
                    images_dir / name,
                    CropRect.square_around_box(x, y, w, h, scale=box_scale),
                    coco_keypoints_to_blazepose33(ann["keypoints"]),
                )
            )
    for path in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name in labelled_images:
            continue
        if detect is not None:
            sources.extend(CropSource(path, rect) for rect in detect(load_rgb(path)))
        else:
            width, height = _image_size(path)
            side = float(max(width, height))
            sources.append(CropSource(path, CropRect(width / 2.0, height / 2.0, side, side)))
    return sources


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    from pose_core.images import to_rgb8

    with Image.open(path) as img:
        return np.asarray(to_rgb8(img))


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def _augment_rect(rect: CropRect, aug: AugmentConfig, rng: np.random.Generator) -> CropRect:
    scale = rng.uniform(*aug.scale_range)
    side_w, side_h = rect.width * scale, rect.height * scale
    dx, dy = rng.uniform(-aug.shift, aug.shift, size=2) * max(rect.width, rect.height)
    rotation = math.radians(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
    return CropRect(rect.cx + dx, rect.cy + dy, side_w, side_h, rect.rotation + rotation)


def _colour_jitter(crop: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> jittered copy, clipped to [0, 1]."""
    out = crop * rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + mean
    grey = out.mean(axis=2, keepdims=True)
    out = (out - grey) * rng.uniform(1 - aug.saturation, 1 + aug.saturation) + grey
    return np.clip(out, 0.0, 1.0)


def flip_targets(targets: np.ndarray, width: int = CROP_SIZE) -> np.ndarray:
    """Mirror (..., 33, 3) crop-pixel targets horizontally and swap left/right landmarks."""
    out = targets.copy()
    out[..., 0] = np.where(out[..., 2] > 0, width - out[..., 0], 0.0)
    for left, right in BLAZEPOSE33_FLIP_PAIRS:
        out[..., [left, right], :] = out[..., [right, left], :]
    return out


def _render(
    image: np.ndarray,
    source: CropSource,
    rect: CropRect,
    flip: bool,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) crop in [0, 1] of ``size`` (width, height) and its targets in crop pixels;
    ``rect`` is enlarged to the crop's aspect ratio first (as serving does)."""
    width, height = size
    rect = fit_rect_to_aspect(rect, width, height)
    crop = warp_crop(image, rect, width, height) / 255.0
    targets = None
    if source.keypoints33 is not None:
        to_crop = invert_affine(crop_to_image_matrix(rect, width, height))
        targets = source.keypoints33.copy()
        targets[:, :2] = apply_affine(to_crop, targets[:, :2])
        targets[targets[:, 2] <= 0, :2] = 0.0
    if flip:
        crop = crop[:, ::-1]
        if targets is not None:
            targets = flip_targets(targets, width)
    return crop, targets


def build_cropset(
    dataset_dirs: Sequence[Path],
    *,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    detect: Detector | None = None,
    box_scale: float = 1.5,
    size: int = CROP_SIZE,
    max_sources: int | None = None,
    crop_format: CropFormat | None = None,
) -> CropSet:
    """Deterministic (given ``seed``) crops of every person in ``dataset_dirs``: ``size`` x
    ``size`` in [0, 1], or in ``crop_format`` (another model's input).

    Each source crop yields the plain crop (if ``augment is None`` or ``augment.keep_plain``)
    plus ``augment.copies`` augmented ones. Targets are present when any source is labelled.
    """
    sources = _sources(dataset_dirs, detect, box_scale, max_sources)
    return _render_sources(sources, augment, seed, _Format.of(size, crop_format))


def build_split(
    dataset_dirs: Sequence[Path],
    *,
    holdout_fraction: float,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    detect: Detector | None = None,
    box_scale: float = 1.5,
    size: int = CROP_SIZE,
    max_sources: int | None = None,
    crop_format: CropFormat | None = None,
) -> tuple[CropSet, HeldOut]:
    """Training crops (as :func:`build_cropset`) and the plain crops of held-out images.

    Whole images are held out (all the people of a photo go to one side), chosen by the
    sha256 of their file name: deterministic, independent of the order and of ``seed``;
    at least one image on each side.
    """
    sources = _sources(dataset_dirs, detect, box_scale, max_sources)
    names = sorted({s.image_path.name for s in sources})
    if len(names) < 2:
        raise ValueError("holding crops out needs persons in at least 2 images")
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    held = set(ranked[: min(max(round(holdout_fraction * len(names)), 1), len(names) - 1)])
    train = [s for s in sources if s.image_path.name not in held]
    kept = [s for s in sources if s.image_path.name in held]
    form = _Format.of(size, crop_format)
    return (
        _render_sources(train, augment, seed, form),
        HeldOut(_render_sources(kept, None, seed, form), tuple(sorted(held))),
    )


def _sources(
    dataset_dirs: Sequence[Path], detect: Detector | None, box_scale: float, limit: int | None
) -> list[CropSource]:
    sources = [
        s
        for d in dataset_dirs
        for s in load_crop_sources(Path(d), box_scale=box_scale, detect=detect)
    ]
    if limit is not None:
        sources = sources[:limit]
    if not sources:
        raise ValueError(f"no crops found in {[str(d) for d in dataset_dirs]}")
    return sources


@dataclass(frozen=True)
class _Format:
    size: tuple[int, int]  #: width, height
    model_input: CropFormat | None  #: normalisation after augmentation; None: [0, 1] RGB

    @staticmethod
    def of(size: int, crop_format: CropFormat | None) -> _Format:
        if crop_format is None:
            return _Format((size, size), None)
        return _Format((crop_format.width, crop_format.height), crop_format)


def _render_sources(
    sources: Sequence[CropSource], augment: AugmentConfig | None, seed: int, form: _Format
) -> CropSet:
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    any_labels = any(s.keypoints33 is not None for s in sources)
    empty = np.zeros((NUM_BODY_LANDMARKS, 3), np.float32)
    cache: dict[Path, np.ndarray] = {}
    for source in sources:
        if source.image_path not in cache:
            cache = {source.image_path: load_rgb(source.image_path)}  # sources are grouped by image
        image = cache[source.image_path]
        variants: list[tuple[CropRect, bool, bool]] = []
        if augment is None or augment.keep_plain:
            variants.append((source.rect, False, False))
        for _ in range(augment.copies if augment is not None else 0):
            assert augment is not None
            variants.append(
                (
                    _augment_rect(source.rect, augment, rng),
                    bool(rng.random() < augment.flip_prob),
                    True,
                )
            )
        for rect, flip, jitter in variants:
            crop, tgt = _render(image, source, rect, flip, form.size)
            if jitter and augment is not None:
                crop = _colour_jitter(crop, augment, rng)
            if form.model_input is not None:
                crop = form.model_input.normalise(crop)
            images.append(np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32))
            targets.append(tgt if tgt is not None else empty)
    logger.info("built %d crops from %d sources", len(images), len(sources))
    return CropSet(np.stack(images), np.stack(targets).astype(np.float32) if any_labels else None)


def detector_crops(runner: Runner) -> Detector:
    """An image -> person crops function from a BlazePose detector runner."""
    from pose_core.inference.detector import detect_people
    from pose_core.inference.roi import rois_from_detections

    def detect(image: np.ndarray) -> list[Any]:
        detections = detect_people(runner, image)
        return list(rois_from_detections(detections.keypoints[:10]))

    return detect


def training_crops(
    dataset_dirs: Sequence[Path],
    *,
    augment_copies: int,
    seed: int,
    max_sources: int | None,
    detector: Runner | None,
    holdout_fraction: float,
    crop_format: CropFormat | None = None,
) -> tuple[CropSet, HeldOut]:
    """Crops of every person of stored datasets -- ground-truth boxes where labelled,
    detector crops (or whole-image squares without a detector) elsewhere -- split by image
    into training crops (plus augmented copies) and held-out crops; BlazePose's crops, or
    ``crop_format``'s."""
    return build_split(
        dataset_dirs,
        holdout_fraction=holdout_fraction,
        augment=AugmentConfig(copies=augment_copies) if augment_copies > 0 else None,
        seed=seed,
        detect=detector_crops(detector) if detector is not None else None,
        max_sources=max_sources,
        crop_format=crop_format,
    )
