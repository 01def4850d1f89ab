"""Dataset archives: safe extraction and validation (pure functions, no database).

Layout of an accepted zip::

    images/<file>.jpg|.jpeg|.png|.webp|.bmp   (one or more, sub-folders allowed)
    annotations.json                          (optional, COCO keypoints format)

Everything is checked before a dataset is accepted: member names (no absolute paths,
no ``..``, no backslashes, no symlinks), member count and uncompressed size (counted
while extracting, not trusted from the zip header), every image decodes with Pillow
within a pixel limit, and the COCO annotations are consistent (unique ids, references
resolve, 17x3 keypoints, visibility in {0, 1, 2}, categories declare 17 keypoints).
"""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from model_store.artifacts import sha256_file
from model_store.errors import DatasetRejected
from model_store.records import DatasetSummary

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
ANNOTATIONS = "annotations.json"
NUM_KEYPOINTS = 17
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DatasetLimits:
    max_members: int = 20_000
    max_uncompressed_bytes: int = 2 * 1024**3
    max_image_bytes: int = 20 * 1024**2
    max_image_pixels: int = 50_000_000


def safe_member_name(name: str) -> PurePosixPath:
    """The member's relative path, or DatasetRejected for anything that could escape."""
    if not name or "\\" in name or "\x00" in name:
        raise DatasetRejected(f"illegal member name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise DatasetRejected(f"absolute member name {name!r}")
    if any(part in ("..", "") for part in path.parts) or ".." in name.split("/"):
        raise DatasetRejected(f"member name {name!r} escapes the archive")
    return path


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_and_validate(zip_path: Path, dest: Path, limits: DatasetLimits) -> DatasetSummary:
    """Extract ``zip_path`` into the empty directory ``dest`` and validate everything.

    Raises DatasetRejected (``dest`` is then left for the caller to delete).
    """
    blob = sha256_file(zip_path)
    checksum, size = blob.sha256, blob.size
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetRejected(f"not a zip archive: {exc}") from exc
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) > limits.max_members:
            raise DatasetRejected(f"{len(members)} members exceed the limit {limits.max_members}")
        images: list[PurePosixPath] = []
        has_annotations = False
        total = 0
        for info in archive.infolist():
            path = safe_member_name(info.filename)
            if _is_symlink(info):
                raise DatasetRejected(f"symlink member {info.filename!r}")
            if info.is_dir():
                continue
            if path == PurePosixPath(ANNOTATIONS):
                has_annotations = True
            elif path.parts[0] == "images" and len(path.parts) > 1:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DatasetRejected(f"unsupported image type {info.filename!r}")
                images.append(path)
            else:
                raise DatasetRejected(
                    f"unexpected member {info.filename!r}: only images/ and annotations.json"
                )
            total += _extract_member(archive, info, dest / path, limits, total)
    if not images:
        raise DatasetRejected("the archive has no images/ files")
    for image in images:
        _check_image(dest / image, image, limits)
    annotation_count = labelled = 0
    if has_annotations:
        annotation_count, labelled = _check_annotations(dest / ANNOTATIONS, images)
    return DatasetSummary(
        image_count=len(images),
        annotation_count=annotation_count,
        labelled_image_count=labelled,
        has_annotations=has_annotations,
        checksum=checksum,
        size_bytes=size,
    )


def _extract_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    limits: DatasetLimits,
    total_so_far: int,
) -> int:
    is_annotations = target.name == ANNOTATIONS
    per_file = limits.max_uncompressed_bytes if is_annotations else limits.max_image_bytes
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with archive.open(info) as src, target.open("xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > per_file:
                    raise DatasetRejected(f"{info.filename!r} exceeds {per_file} bytes")
                if total_so_far + written > limits.max_uncompressed_bytes:
                    raise DatasetRejected(
                        f"uncompressed size exceeds {limits.max_uncompressed_bytes} bytes"
                    )
                out.write(chunk)
    except FileExistsError as exc:
        raise DatasetRejected(f"duplicate member {info.filename!r}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DatasetRejected(f"cannot read member {info.filename!r}: {exc}") from exc
    except RuntimeError as exc:  # encrypted members
        raise DatasetRejected(f"cannot read member {info.filename!r}: {exc}") from exc
    return written


def _check_image(path: Path, name: PurePosixPath, limits: DatasetLimits) -> tuple[int, int]:
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limits.max_image_pixels:
                    raise DatasetRejected(
                        f"image {str(name)!r} has {width}x{height} pixels, over the limit"
                    )
                image.load()
    except DatasetRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetRejected(f"image {str(name)!r} is a decompression bomb: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise DatasetRejected(f"image {str(name)!r} does not decode: {exc}") from exc
    return width, height


def _check_annotations(path: Path, images: list[PurePosixPath]) -> tuple[int, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetRejected(f"annotations.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetRejected("annotations.json must be a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetRejected(f"annotations.json: '{key}' must be a list")
    categories = _ids(data["categories"], "categories")
    for category in data["categories"]:
        keypoints = category.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) != NUM_KEYPOINTS:
            raise DatasetRejected(
                f"category {category['id']} must declare {NUM_KEYPOINTS} keypoint names"
            )
    image_ids = _ids(data["images"], "images")
    present = {str(PurePosixPath(*p.parts[1:])) for p in images}
    for image in data["images"]:
        file_name = str(image.get("file_name", ""))
        relative = file_name.removeprefix("images/")
        if relative not in present:
            raise DatasetRejected(f"image {image['id']}: file {file_name!r} not in images/")
    _ids(data["annotations"], "annotations")
    labelled: set[Any] = set()
    for ann in data["annotations"]:
        ann_id = ann["id"]
        if ann.get("image_id") not in image_ids:
            raise DatasetRejected(f"annotation {ann_id}: unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in categories:
            raise DatasetRejected(
                f"annotation {ann_id}: unknown category_id {ann.get('category_id')!r}"
            )
        keypoints = ann.get("keypoints")
        if (
            not isinstance(keypoints, list)
            or len(keypoints) != NUM_KEYPOINTS * 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in keypoints)
        ):
            raise DatasetRejected(f"annotation {ann_id}: keypoints must be 17x3 numbers")
        if any(v not in (0, 1, 2) for v in keypoints[2::3]):
            raise DatasetRejected(f"annotation {ann_id}: visibility flags must be 0, 1 or 2")
        bbox = ann.get("bbox")
        if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4):
            raise DatasetRejected(f"annotation {ann_id}: bbox must be [x, y, w, h]")
        if any(v > 0 for v in keypoints[2::3]):
            labelled.add(ann["image_id"])
    return len(data["annotations"]), len(labelled)


def _ids(items: list[Any], what: str) -> set[Any]:
    ids: set[Any] = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise DatasetRejected(f"annotations.json: every entry of '{what}' needs an integer id")
        if item["id"] in ids:
            raise DatasetRejected(f"annotations.json: duplicate id {item['id']} in '{what}'")
        ids.add(item["id"])
    return ids


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
