"""A dataset folder (``images/`` + COCO keypoints ``annotations.json``) as this project reads
it: one schema for the dataset upload check (``model_store.datasets``) and the loader of the
jobs (:mod:`pose_core.evaluation.dataset`), so a dataset the upload accepts is one the jobs can
read.

Values are typed and finite (no NaN keypoints, no ``"wide"`` widths), ids are unique and every
reference resolves. Parsed from bytes by pydantic's JSON parser, whose nesting limit turns a
deeply nested file into a validation error instead of a RecursionError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pose_core.keypoints import COCO17_NAMES

if TYPE_CHECKING:
    from PIL import Image

NUM_KEYPOINTS = len(COCO17_NAMES)
PERSON_CATEGORY_ID = 1
#: File suffixes read as images in a dataset folder (lower case), and the Pillow formats their
#: bytes must have (MPO: multi-picture JPEGs from phones).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})
#: EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})

Number = StrictInt | StrictFloat
NonNegative = Annotated[Number, Field(ge=0)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


class CocoImage(_Record):
    id: StrictInt
    file_name: StrictStr = Field(min_length=1)
    width: StrictInt = Field(ge=1)
    height: StrictInt = Field(ge=1)

    @property
    def relative_name(self) -> str:
        """The file's path under ``images/`` (a leading ``images/`` is allowed)."""
        return self.file_name.removeprefix("images/")


class CocoCategory(_Record):
    id: StrictInt
    name: StrictStr = "person"
    keypoints: list[StrictStr] = Field(
        default_factory=lambda: list(COCO17_NAMES),
        min_length=NUM_KEYPOINTS,
        max_length=NUM_KEYPOINTS,
    )


class CocoAnnotation(_Record):
    id: StrictInt
    image_id: StrictInt
    category_id: StrictInt = PERSON_CATEGORY_ID
    keypoints: list[Number] = Field(min_length=3 * NUM_KEYPOINTS, max_length=3 * NUM_KEYPOINTS)
    """17 x (x, y, v), COCO-17 order; ``v`` 0 (not labelled), 1 (occluded) or 2 (visible)."""
    bbox: tuple[Number, Number, NonNegative, NonNegative]
    """``[x, y, w, h]`` in image pixels."""
    area: NonNegative | None = None
    iscrowd: Literal[0, 1] | bool = 0

    @field_validator("keypoints")
    @classmethod
    def _visibility_flags(cls, values: list[float]) -> list[float]:
        if any(v not in (0, 1, 2) for v in values[2::3]):
            raise ValueError("visibility flags must be 0, 1 or 2")
        return values


class CocoFile(_Record):
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory] = Field(
        default_factory=lambda: [CocoCategory(id=PERSON_CATEGORY_ID)]
    )

    @model_validator(mode="after")
    def _references_resolve(self) -> CocoFile:
        image_ids = _unique_ids(self.images, "images")
        category_ids = _unique_ids(self.categories, "categories")
        _unique_ids(self.annotations, "annotations")
        for ann in self.annotations:
            if ann.image_id not in image_ids:
                raise ValueError(f"annotation {ann.id}: unknown image_id {ann.image_id}")
            if ann.category_id not in category_ids:
                raise ValueError(f"annotation {ann.id}: unknown category_id {ann.category_id}")
        return self


def _unique_ids(items: list[Any], what: str) -> set[int]:
    ids: set[int] = set()
    for item in items:
        if item.id in ids:
            raise ValueError(f"duplicate id {item.id} in '{what}'")
        ids.add(item.id)
    return ids


class CocoFileError(ValueError):
    """``annotations.json`` is not valid JSON or does not fit :class:`CocoFile`."""


def parse_coco(data: bytes) -> CocoFile:
    """``annotations.json`` bytes as a validated :class:`CocoFile`.

    Raises:
        CocoFileError: naming the first few problems.
    """
    try:
        return CocoFile.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:5]
        )
        raise CocoFileError(f"annotations.json: {problems}") from exc


def label_sizes(image: Image.Image) -> set[tuple[int, int]]:
    """The ``(width, height)`` an image record may declare for ``image``: the stored pixel grid,
    or the EXIF-rotated one (labels made on the rotated view; see
    :func:`pose_core.evaluation.dataset.load_rgb`)."""
    width, height = image.size
    if image.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
        return {(width, height), (height, width)}
    return {(width, height)}
