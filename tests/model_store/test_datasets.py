"""Dataset validation as pure functions (the API tests cover the HTTP side)."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import pytest
from service_support import coco_annotations, jpeg_bytes

from model_store.datasets import DatasetLimits, extract_and_validate, safe_member_name
from model_store.errors import DatasetRejected


def _zip(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _annotations(**patch: object) -> bytes:
    data = coco_annotations({"a.jpg": (32, 24)})
    for dotted, value in patch.items():
        target, *path = dotted.split("__")
        node = data[target]
        for part in path[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        node[path[-1] if not path[-1].isdigit() else int(path[-1])] = value
    return json.dumps(data).encode()


def _check(tmp_path: Path, members: dict[str, bytes], limits: DatasetLimits | None = None):
    dest = Path(tempfile.mkdtemp(dir=tmp_path, prefix="out-"))
    return extract_and_validate(_zip(tmp_path, members), dest, limits or DatasetLimits())


def test_valid_dataset_summary(tmp_path: Path):
    summary = _check(tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": _annotations()})
    assert (summary.image_count, summary.annotation_count, summary.labelled_image_count) == (
        1,
        1,
        1,
    )
    extracted = next(tmp_path.glob("out-*/images/a.jpg"))
    assert extracted.read_bytes() == jpeg_bytes()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"annotations__0__image_id": 99}, "unknown image_id"),
        ({"annotations__0__category_id": 7}, "unknown category_id"),
        ({"annotations__0__id": "x"}, "id: Input should be a valid integer"),
        ({"annotations__0__bbox": [1, 2]}, "bbox"),
        ({"images__0__file_name": "missing.jpg"}, "not in images/"),
        ({"categories__0__keypoints": ["nose"]}, "categories.0.keypoints"),
    ],
)
def test_inconsistent_annotations_are_rejected(tmp_path: Path, patch: dict, message: str):
    with pytest.raises(DatasetRejected, match=message):
        _check(tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": _annotations(**patch)})


def test_visibility_flags_and_duplicate_ids(tmp_path: Path):
    data = coco_annotations({"a.jpg": (32, 24)})
    data["annotations"][0]["keypoints"][2] = 3
    with pytest.raises(DatasetRejected, match="visibility"):
        _check(
            tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": json.dumps(data).encode()}
        )
    data = coco_annotations({"a.jpg": (32, 24)})
    data["images"].append(dict(data["images"][0]))
    with pytest.raises(DatasetRejected, match="duplicate id"):
        _check(
            tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": json.dumps(data).encode()}
        )


def test_decompression_bomb_is_rejected(tmp_path: Path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, format="PNG")  # 16 Mpx, tiny file
    with pytest.raises(DatasetRejected, match="pixels"):
        _check(
            tmp_path, {"images/bomb.png": buffer.getvalue()}, DatasetLimits(max_image_pixels=10**6)
        )


def test_member_count_and_uncompressed_limits(tmp_path: Path):
    members = {f"images/{i}.jpg": jpeg_bytes() for i in range(5)}
    with pytest.raises(DatasetRejected, match="members"):
        _check(tmp_path, members, DatasetLimits(max_members=4))
    with pytest.raises(DatasetRejected, match="uncompressed"):
        _check(
            tmp_path,
            {"images/big.png": b"\0" * 200_000},
            DatasetLimits(max_uncompressed_bytes=100_000),
        )


@pytest.mark.parametrize(
    "name", ["../x.jpg", "images/../../x.jpg", "/abs.jpg", "C:/x.jpg", "images\\x.jpg", ""]
)
def test_unsafe_member_names(name: str):
    with pytest.raises(DatasetRejected):
        safe_member_name(name)


def _image_bytes(format: str, size: tuple[int, int] = (32, 24)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, format=format)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "annotations",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"images": ' + b"[" * 5000 + b"]" * 5000 + b', "annotations": []}',
        _annotations(annotations__0__image_id=[1]),
        _annotations(annotations__0__category_id={"id": 1}),
        _annotations(annotations__0__bbox=["a", "b", "c", "d"]),
        _annotations(images__0__width="wide"),
        _annotations(images__0__width=33),
        _annotations(annotations__0__keypoints__0=float("nan")),
        _annotations(annotations__0__keypoints__4=float("inf")),
        _annotations(annotations__0__keypoints__0="1"),
        _annotations(images__0__id=True),
    ],
    ids=[
        "nested-lists",
        "nested-images",
        "image_id-list",
        "category_id-dict",
        "bbox-strings",
        "width-string",
        "width-mismatch",
        "nan-keypoint",
        "inf-keypoint",
        "string-keypoint",
        "bool-id",
    ],
)
def test_annotations_the_loader_cannot_use_are_rejected(tmp_path: Path, annotations: bytes):
    with pytest.raises(DatasetRejected, match="annotations"):
        _check(tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": annotations})


@pytest.mark.parametrize(("name", "format"), [("a.png", "GIF"), ("a.jpg", "TIFF")])
def test_images_in_formats_serving_refuses_are_rejected(tmp_path: Path, name: str, format: str):
    with pytest.raises(DatasetRejected, match=format):
        _check(tmp_path, {f"images/{name}": _image_bytes(format)})


def test_rotated_photo_may_declare_its_upright_size(tmp_path: Path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: labels made on the 24x32 upright view
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buffer, format="JPEG", exif=exif)
    upright = _annotations(images__0__width=24, images__0__height=32)
    summary = _check(tmp_path, {"images/a.jpg": buffer.getvalue(), "annotations.json": upright})
    assert summary.annotation_count == 1


def test_annotations_have_their_own_size_cap(tmp_path: Path):
    padded = _annotations() + b" " * 5000
    limits = DatasetLimits(max_annotations_bytes=4096)
    with pytest.raises(DatasetRejected, match=r"annotations\.json.* exceeds 4096 bytes"):
        _check(tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": padded}, limits)
    assert _check(tmp_path, {"images/a.jpg": jpeg_bytes(), "annotations.json": _annotations()})
