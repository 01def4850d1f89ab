"""POSECOMPRESS_API_KEY: checked before the body is read, on predict too unless
PREDICT_REQUIRES_KEY=false."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from service_support import assert_error_shape, jpeg_bytes

PREDICT_POSTS = [
    ("/predict", "image"),
    ("/predict/batch", "images"),
    ("/models/blazepose-full/versions/1/predict", "image"),
]


@pytest.mark.parametrize(("url", "field"), PREDICT_POSTS)
def test_predict_needs_the_key_by_default(
    make_client: Callable[..., TestClient], url: str, field: str
):
    client = make_client(api_key="s3cret")
    response = client.post(url, files={field: ("a.jpg", jpeg_bytes())})
    assert response.status_code == 401, response.text
    assert_error_shape(response.json(), "unauthorized")
    keyed = client.post(
        url, files={field: ("a.jpg", jpeg_bytes())}, headers={"X-API-Key": "s3cret"}
    )
    assert keyed.status_code == 404  # past the key: no such model stored here


@pytest.mark.parametrize(("url", "field"), PREDICT_POSTS)
def test_predict_can_be_left_open(make_client: Callable[..., TestClient], url: str, field: str):
    client = make_client(api_key="s3cret", predict_requires_key=False)
    assert client.post(url, files={field: ("a.jpg", jpeg_bytes())}).status_code == 404
    assert client.post("/models", data={"name": "x"}).status_code == 401


def test_malformed_bodies_without_the_key_are_401(make_client: Callable[..., TestClient]):
    client = make_client(api_key="s3cret")
    for url in ("/models", "/datasets", "/predict", "/models/x/versions/1/compress"):
        response = client.post(
            url,
            content=b"--broken\r\n",
            headers={"content-type": "multipart/form-data; boundary=broken"},
        )
        assert response.status_code == 401, (url, response.text)
    response = client.put("/models/x/aliases/prod", content=b"{not json")
    assert response.status_code == 401


def test_the_body_is_not_read_before_the_key_check(make_client: Callable[..., TestClient]):
    client = make_client(api_key="s3cret")
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        for _ in range(200):  # 200 MiB, never produced
            sent.append(1)
            yield b"\0" * (1024 * 1024)

    response = client.post(
        "/models",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 401
    assert len(sent) <= 1
