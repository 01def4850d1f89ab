"""COCO-keypoints datasets on disk: ``annotations.json`` + ``images/``, read into typed records.

Layout of a dataset directory::

    DIR/annotations.json   COCO keypoints JSON (images, annotations, categories)
    DIR/images/<file_name> the photos named by ``images[].file_name``

Images are decoded lazily (:meth:`ImageRecord.load`) to RGB ``uint8`` arrays with Pillow.
Orientation: COCO annotations refer to the pixel grid as stored in the file, so EXIF
orientation is *not* applied when the stored size already matches the record's
``width x height``. When it does not match but the EXIF-transposed size does (a photo whose
labels were made on the rotated view), the transposed image is used. Any other size mismatch
is an error, because the labels would not line up with the pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose_core.dataset_schema import (
    NUM_KEYPOINTS,
    PERSON_CATEGORY_ID,
    CocoAnnotation,
    CocoFileError,
    parse_coco,
)
from pose_core.images import to_rgb8

logger = logging.getLogger(__name__)


class DatasetError(Exception):
    """The dataset directory or its annotations cannot be read."""


@dataclass(frozen=True)
class PersonAnnotation:
    """One annotated person.

    Attributes:
        id: annotation id (unique in the dataset).
        image_id: id of the image it belongs to.
        bbox: ``(x, y, w, h)`` in image pixels.
        keypoints: (17, 3) float64 array of ``(x, y, v)``, COCO-17 order; ``v`` is 0 when the
            keypoint is not labelled, 1 labelled but occluded, 2 visible.
        area: COCO ``area`` (segment area; OKS scale is ``sqrt(area)``).
        iscrowd: COCO crowd flag.
    """

    id: int
    image_id: int
    bbox: tuple[float, float, float, float]
    keypoints: np.ndarray = field(repr=False)
    area: float
    iscrowd: bool = False

    @property
    def num_labelled(self) -> int:
        """How many keypoints carry a label (``v > 0``)."""
        return int(np.count_nonzero(self.keypoints[:, 2] > 0))

    @property
    def has_keypoints(self) -> bool:
        """True when at least one keypoint is labelled (COCOeval ignores the others)."""
        return self.num_labelled > 0


@dataclass(frozen=True)
class ImageRecord:
    """One image of the dataset and the people annotated in it."""

    id: int
    file_name: str
    width: int
    height: int
    path: Path
    annotations: tuple[PersonAnnotation, ...] = ()

    @property
    def people_with_keypoints(self) -> tuple[PersonAnnotation, ...]:
        """Non-crowd annotations with at least one labelled keypoint."""
        return tuple(a for a in self.annotations if a.has_keypoints and not a.iscrowd)

    def load(self) -> np.ndarray:
        """Decode the image: (H, W, 3) uint8 RGB, oriented as the annotations expect."""
        return load_rgb(self.path, expected_size=(self.width, self.height))


@dataclass(frozen=True)
class KeypointDataset:
    """A COCO-keypoints dataset: typed records plus the raw COCO dict (for pycocotools)."""

    root: Path
    images: tuple[ImageRecord, ...]
    coco: dict[str, Any] = field(repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.images)

    @property
    def num_people(self) -> int:
        """People with at least one labelled keypoint (those the metrics count)."""
        return sum(len(img.people_with_keypoints) for img in self.images)


def load_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Args:
        path: image file.
        expected_size: ``(width, height)`` the labels were made on; see the module docstring
            for how EXIF orientation is resolved against it. ``None`` applies EXIF orientation.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if expected_size is None:
                oriented = ImageOps.exif_transpose(img)
            elif img.size == expected_size:
                oriented = img
            else:
                oriented = ImageOps.exif_transpose(img)
                if oriented.size != expected_size:
                    raise DatasetError(
                        f"{path}: image is {img.size[0]}x{img.size[1]} but annotations say "
                        f"{expected_size[0]}x{expected_size[1]}"
                    )
                logger.info("%s: EXIF orientation applied to match the annotations", path)
            return np.asarray(to_rgb8(oriented), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def load_dataset(root: str | Path) -> KeypointDataset:
    """Read ``root/annotations.json`` (checked against :mod:`pose_core.dataset_schema`) and
    index it; images are not decoded here.

    Only annotations of the person category (id 1) are kept. Raises :class:`DatasetError`
    when the file is missing, does not fit the schema, or names a missing image.
    """
    root = Path(root)
    ann_path = root / "annotations.json"
    try:
        raw = ann_path.read_bytes()
        parsed = parse_coco(raw)
    except (OSError, CocoFileError) as exc:
        raise DatasetError(f"cannot read {ann_path}: {exc}") from exc

    by_image: dict[int, list[PersonAnnotation]] = {}
    for ann in parsed.annotations:
        if ann.category_id == PERSON_CATEGORY_ID:
            by_image.setdefault(ann.image_id, []).append(_person(ann))

    images = []
    for image in parsed.images:
        record = ImageRecord(
            id=image.id,
            file_name=image.file_name,
            width=image.width,
            height=image.height,
            path=root / "images" / image.relative_name,
            annotations=tuple(by_image.get(image.id, ())),
        )
        if not record.path.is_file():
            raise DatasetError(f"{ann_path}: image file missing: {record.path}")
        images.append(record)
    coco = json.loads(raw)  # the raw dict, for pycocotools
    coco.setdefault("categories", [c.model_dump() for c in parsed.categories])
    return KeypointDataset(root=root, images=tuple(images), coco=coco)


def _person(ann: CocoAnnotation) -> PersonAnnotation:
    x, y, w, h = (float(v) for v in ann.bbox)
    return PersonAnnotation(
        id=ann.id,
        image_id=ann.image_id,
        bbox=(x, y, w, h),
        keypoints=np.asarray(ann.keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3),
        area=float(ann.area) if ann.area is not None else w * h,
        iscrowd=bool(ann.iscrowd),
    )
