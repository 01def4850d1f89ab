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
        ({"annotations__0__id": "x"}, "integer id"),
        ({"annotations__0__bbox": [1, 2]}, "bbox"),
        ({"images__0__file_name": "missing.jpg"}, "not in images/"),
        ({"categories__0__keypoints": ["nose"]}, "17 keypoint names"),
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
