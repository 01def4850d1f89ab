"""Version references in paths and forms: ASCII digits are numbers, anything else an alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import assert_error_shape

from model_store.records import MAX_VERSION_NUMBER, version_number


@pytest.fixture
def tiny_client(client: TestClient, tiny_onnx: Path) -> TestClient:
    with tiny_onnx.open("rb") as handle:
        response = client.post(
            "/models",
            data={"name": "tiny", "manifest": json.dumps({"input_size": [64, 64]})},
            files={"file": ("tiny.onnx", handle)},
        )
    assert response.status_code == 201, response.text
    return client


@pytest.mark.parametrize(
    ("ref", "number"),
    [
        ("1", 1),
        ("007", 7),
        ("latest", None),
        ("³", None),
        ("٣", None),
        ("1.0", None),
        ("9" * 30, MAX_VERSION_NUMBER + 1),
        (5, 5),
    ],
)
def test_version_number_is_ascii_digits_only(ref: str | int, number: int | None):
    assert version_number(ref) == number


@pytest.mark.parametrize("ref", ["³", "٣", "²", "9" * 30, str(2**31)])
@pytest.mark.parametrize("suffix", ["", "/report", "/artifact"])
def test_unknown_version_refs_answer_404(tiny_client: TestClient, ref: str, suffix: str):
    response = tiny_client.get(f"/models/tiny/versions/{ref}{suffix}")
    assert response.status_code == 404, response.text
    assert_error_shape(response.json(), "not_found")


def test_arabic_indic_digit_is_not_version_3(tiny_client: TestClient, tiny_onnx: Path):
    for _ in range(2):
        with tiny_onnx.open("rb") as handle:
            tiny_client.post("/models", data={"name": "tiny"}, files={"file": ("t.onnx", handle)})
    assert tiny_client.get("/models/tiny/versions/3").status_code == 200
    assert tiny_client.get("/models/tiny/versions/٣").status_code == 404


def test_compare_and_jobs_with_unknown_refs(tiny_client: TestClient):
    assert tiny_client.get("/models/tiny/compare", params={"versions": "1,²"}).status_code == 404
    response = tiny_client.post(
        "/models/tiny/versions/³/compress",
        json={"recipe": [{"method": "quantize"}], "dataset": "x"},
    )
    assert response.status_code == 404, response.text
    response = tiny_client.post(
        "/predict", data={"model": "tiny", "version": "³"}, files={"image": ("a.jpg", b"x")}
    )
    assert response.status_code == 404, response.text
    response = tiny_client.post("/models/tiny/versions/³/predict", files={"image": ("a.jpg", b"x")})
    assert response.status_code == 404, response.text


def test_out_of_range_numbers_in_bodies_and_paths(tiny_client: TestClient):
    huge = 2**63
    assert tiny_client.delete(f"/models/tiny/versions/{huge}").status_code == 404
    response = tiny_client.put("/models/tiny/aliases/prod", json={"version": huge})
    assert response.status_code == 422, response.text
