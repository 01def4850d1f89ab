"""Dataset archives: safe extraction and validation (pure functions, no database).

Layout of an accepted zip::

    images/<file>.jpg|.jpeg|.png|.webp|.bmp   (one or more, sub-folders allowed)
    annotations.json                          (optional, COCO keypoints format)

Everything is checked before a dataset is accepted: member names (no absolute paths,
no ``..``, no backslashes, no symlinks), member count and uncompressed size (counted
while extracting, not trusted from the zip header; ``annotations.json`` has its own cap),
every image is a JPEG, PNG, WebP or BMP that decodes with Pillow within a pixel limit, and
the annotations fit :mod:`pose_core.dataset_schema` (the schema the jobs load them with:
typed, finite values, unique ids, references resolve, 17x3 keypoints) and name images that
exist with the width and height of their pixels.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from model_store.artifacts import sha256_file
from model_store.errors import DatasetRejected
from model_store.records import DatasetSummary
from pose_core.dataset_schema import (
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    CocoFileError,
    label_sizes,
    parse_coco,
)

ANNOTATIONS = "annotations.json"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DatasetLimits:
    max_members: int = 20_000
    max_uncompressed_bytes: int = 2 * 1024**3
    max_image_bytes: int = 20 * 1024**2
    max_image_pixels: int = 50_000_000
    max_annotations_bytes: int = 64 * 1024**2


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
    sizes = {
        str(PurePosixPath(*image.parts[1:])): _check_image(dest / image, image, limits)
        for image in images
    }
    annotation_count = labelled = 0
    if has_annotations:
        annotation_count, labelled = _check_annotations(dest / ANNOTATIONS, sizes)
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
    per_file = limits.max_annotations_bytes if is_annotations else limits.max_image_bytes
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


def _check_image(path: Path, name: PurePosixPath, limits: DatasetLimits) -> set[tuple[int, int]]:
    """Decode the image fully; the sizes an annotation may declare for it."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format not in IMAGE_FORMATS:
                    raise DatasetRejected(
                        f"image {str(name)!r} is {image.format}, not JPEG, PNG, WebP or BMP"
                    )
                width, height = image.size
                if width * height > limits.max_image_pixels:
                    raise DatasetRejected(
                        f"image {str(name)!r} has {width}x{height} pixels, over the limit"
                    )
                image.load()
                return label_sizes(image)
    except DatasetRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetRejected(f"image {str(name)!r} is a decompression bomb: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise DatasetRejected(f"image {str(name)!r} does not decode: {exc}") from exc


def _check_annotations(path: Path, sizes: dict[str, set[tuple[int, int]]]) -> tuple[int, int]:
    """(annotations, labelled images) of an ``annotations.json`` whose images are ``sizes``
    (relative file name -> the sizes a record may declare)."""
    try:
        coco = parse_coco(path.read_bytes())
    except CocoFileError as exc:
        raise DatasetRejected(str(exc)) from exc
    for image in coco.images:
        relative = image.relative_name
        if relative not in sizes:
            raise DatasetRejected(f"image {image.id}: file {image.file_name!r} not in images/")
        if (image.width, image.height) not in sizes[relative]:
            actual = " or ".join(f"{w}x{h}" for w, h in sorted(sizes[relative]))
            raise DatasetRejected(
                f"image {image.id}: annotations say {image.width}x{image.height}, "
                f"the file is {actual}"
            )
    labelled = {ann.image_id for ann in coco.annotations if any(ann.keypoints[2::3])}
    return len(coco.annotations), len(labelled)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
