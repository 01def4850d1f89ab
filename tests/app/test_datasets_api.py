from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from service_support import (
    TEST_DATA,
    assert_error_shape,
    dataset_zip,
    jpeg_bytes,
    sha256,
    stored_files,
)


def post_zip(client: TestClient, data: bytes, name: str | None = "dev"):
    form = {"name": name} if name else {}
    return client.post("/datasets", data=form, files={"file": ("d.zip", data, "application/zip")})


def test_dataset_lifecycle(client: TestClient):
    archive = dataset_zip()
    response = post_zip(client, archive)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["image_count"] == 2 and body["annotation_count"] == 2
    assert body["labelled_image_count"] == 2 and body["has_annotations"] is True
    assert body["checksum"] == sha256(archive) and body["size_bytes"] == len(archive)
    assert body["name"] == "dev"

    data_dir = client.app.state.settings.resolved_data_dir  # type: ignore[attr-defined]
    folder = data_dir / "datasets" / body["id"]
    bus = (TEST_DATA / "ultralytics_bus.jpg").read_bytes()
    assert (folder / "images" / "ultralytics_bus.jpg").read_bytes() == bus
    assert json.loads((folder / "annotations.json").read_text())["images"]

    assert client.get(f"/datasets/{body['id']}").json() == body
    assert [d["id"] for d in client.get("/datasets").json()] == [body["id"]]
    assert client.delete(f"/datasets/{body['id']}").status_code == 204
    assert client.get(f"/datasets/{body['id']}").status_code == 404
    assert not folder.exists()


def test_images_only_dataset(client: TestClient):
    response = post_zip(client, dataset_zip({"images/a.jpg": jpeg_bytes()}, with_annotations=False))
    assert response.status_code == 201
    assert response.json()["has_annotations"] is False
    assert response.json()["annotation_count"] == 0


def _zip_with_raw_member(name: str, data: bytes, *, symlink: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/ok.jpg", jpeg_bytes())
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, data)
    return buffer.getvalue()


def _bad_annotations() -> bytes:
    base = json.loads(dataset_zip_annotations())
    base["annotations"][0]["keypoints"] = base["annotations"][0]["keypoints"][:-3]
    return dataset_zip(
        {"images/a.jpg": jpeg_bytes(), "annotations.json": json.dumps(base).encode()}
    )


def dataset_zip_annotations() -> str:
    archive = zipfile.ZipFile(io.BytesIO(dataset_zip({"images/a.jpg": jpeg_bytes()})))
    return archive.read("annotations.json").decode()


BAD_ARCHIVES: dict[str, Callable[[], bytes]] = {
    "not a zip": lambda: b"PK\x03\x04 but not really a zip file at all",
    "parent traversal": lambda: _zip_with_raw_member("images/../../evil.jpg", jpeg_bytes()),
    "absolute name": lambda: _zip_with_raw_member("/etc/evil.jpg", jpeg_bytes()),
    "symlink": lambda: _zip_with_raw_member("images/link.jpg", b"/etc/passwd", symlink=True),
    "corrupt image": lambda: dataset_zip(
        {"images/a.jpg": jpeg_bytes()[:200]}, with_annotations=False
    ),
    "not an image": lambda: dataset_zip({"images/a.png": b"hello"}, with_annotations=False),
    "unexpected member": lambda: _zip_with_raw_member("run.sh", b"rm -rf /"),
    "no images": lambda: dataset_zip({}, with_annotations=False),
    "keypoints not 17x3": _bad_annotations,
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archives_are_rejected_and_store_nothing(client: TestClient, case: str):
    response = post_zip(client, BAD_ARCHIVES[case]())
    assert response.status_code == 422, response.text
    assert_error_shape(response.json(), "dataset_rejected")
    assert client.get("/datasets").json() == []
    data_dir = client.app.state.settings.resolved_data_dir  # type: ignore[attr-defined]
    assert stored_files(data_dir, "datasets") == []
    assert stored_files(data_dir, "tmp") == []


def test_too_large_dataset_is_413(make_client: Callable[..., TestClient]):
    client = make_client(max_upload_bytes=1000)
    response = post_zip(client, dataset_zip())
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")
    assert client.get("/datasets").json() == []


def test_image_over_the_per_image_limit_is_rejected(make_client: Callable[..., TestClient]):
    client = make_client(max_image_bytes=1000)
    response = post_zip(client, dataset_zip())
    assert response.status_code == 422
    assert "exceeds" in response.json()["error"]["message"]
