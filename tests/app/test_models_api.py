from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import assert_error_shape, stored_files


def upload(client: TestClient, path: Path, name: str = "tiny", **extra: str):
    data = {"name": name, **extra}
    with path.open("rb") as handle:
        return client.post("/models", data=data, files={"file": (path.name, handle)})


def test_upload_stores_version_one_and_serves_the_artifact(client: TestClient, tiny_onnx: Path):
    response = upload(client, tiny_onnx, manifest=json.dumps({"input_size": [64, 64]}))
    assert response.status_code == 201, response.text
    body = response.json()
    content = tiny_onnx.read_bytes()
    assert body["name"] == "tiny" and body["version"] == 1 and body["format"] == "onnx"
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["size"] == len(content)

    version = client.get("/models/tiny/versions/latest").json()
    assert version["status"] == "ready" and version["aliases"] == ["latest"]
    assert version["manifest"] == {"input_size": [64, 64]}
    outputs = version["report"]["inspection"]["outputs"]
    assert outputs == [{"name": "heatmaps", "shape": [1, 17, 32, 32], "dtype": "float32"}]
    assert version["artifacts"][0]["filename"] == "tiny.onnx"

    download = client.get("/models/tiny/versions/1/artifact")
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["x-checksum-sha256"] == body["sha256"]

    assert upload(client, tiny_onnx).json()["version"] == 2
    models = client.get("/models").json()
    assert [(m["name"], m["latest"], m["version_count"]) for m in models] == [("tiny", 2, 2)]


def test_rejected_uploads_store_nothing(client: TestClient, tiny_onnx: Path, tmp_path: Path):
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"\x08\x01this is not a protobuf graph" * 10)
    response = upload(client, garbage)
    assert response.status_code == 422
    assert_error_shape(response.json(), "upload_rejected")

    unknown = tmp_path / "weights.pkl"
    unknown.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    response = upload(client, unknown)
    assert response.status_code == 422 and "unsupported" in response.json()["error"]["message"]

    assert upload(client, tiny_onnx, manifest="{not json").status_code == 422
    wrong_shape = upload(client, tiny_onnx, manifest=json.dumps({"input_shape": [1, 3, 64]}))
    assert wrong_shape.status_code == 422
    assert upload(client, tiny_onnx, name="../escape").status_code == 422

    assert client.get("/models").json() == []
    data_dir = client.app.state.settings.resolved_data_dir  # type: ignore[attr-defined]
    assert stored_files(data_dir, "artifacts") == []
    assert stored_files(data_dir, "tmp") == []


def test_upload_over_the_limit_is_413(make_client: Callable[..., TestClient], tiny_onnx: Path):
    size = tiny_onnx.stat().st_size
    client = make_client(max_upload_bytes=size - 1)  # body within the slack, file over
    response = upload(client, tiny_onnx)
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")
    big = make_client(max_upload_bytes=10)
    huge = big.post("/models", data={"name": "x"}, files={"file": ("a.onnx", b"0" * 2_000_000)})
    assert huge.status_code == 413
    assert_error_shape(huge.json(), "payload_too_large")
    assert client.get("/models").json() == []


def test_aliases_move_in_one_call_and_block_deletion(client: TestClient, tiny_onnx: Path):
    for _ in range(2):
        assert upload(client, tiny_onnx).status_code == 201
    moved = client.put("/models/tiny/aliases/production", json={"version": 1})
    assert moved.status_code == 200 and moved.json()["version"] == 1
    assert client.get("/models/tiny/versions/production").json()["version"] == 1
    client.put("/models/tiny/aliases/production", json={"version": 2})
    assert client.get("/models/tiny/aliases").json() == {"production": 2, "latest": 2}

    conflict = client.delete("/models/tiny/versions/2")
    assert conflict.status_code == 409
    assert_error_shape(conflict.json(), "conflict")
    assert client.put("/models/tiny/aliases/latest", json={"version": 1}).status_code == 409
    assert client.put("/models/tiny/aliases/x", json={"version": 9}).status_code == 404
    # no pose manifest: serving could not run it, so it cannot be the default
    not_servable = client.put("/models/tiny/aliases/default", json={"version": 1})
    assert not_servable.status_code == 422
    assert_error_shape(not_servable.json(), "not_servable")
    assert client.delete("/models/tiny/aliases/default").status_code == 409

    assert client.delete("/models/tiny/versions/1").status_code == 204
    assert client.delete("/models/tiny/versions/2", params={"force": "true"}).status_code == 204
    assert client.get("/models/tiny/versions").json() == []


def test_api_key_guards_every_write(make_client: Callable[..., TestClient], tiny_onnx: Path):
    client = make_client(api_key="s3cret")
    assert upload(client, tiny_onnx).status_code == 401
    response = client.post(
        "/models",
        data={"name": "tiny"},
        files={"file": ("tiny.onnx", tiny_onnx.read_bytes())},
        headers={"X-API-Key": "wrong"},
    )
    assert response.status_code == 401
    assert_error_shape(response.json(), "unauthorized")
    client.headers["X-API-Key"] = "s3cret"
    assert upload(client, tiny_onnx).status_code == 201
    del client.headers["X-API-Key"]
    assert client.get("/models").status_code == 200
    for method, url in (
        ("DELETE", "/models/tiny"),
        ("DELETE", "/models/tiny/versions/1"),
        ("PUT", "/models/tiny/aliases/prod"),
        ("POST", "/models/tiny/versions/1/export"),
        ("DELETE", "/jobs/123"),
        ("POST", "/datasets"),
        ("DELETE", "/datasets/abc"),
    ):
        assert client.request(method, url).status_code == 401, (method, url)
    assert client.get("/models/tiny/versions/1").status_code == 200


def _relu_onnx(path: Path, shape: list[int]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    "manifest",
    [
        {"input_shape": [1, 3, 100000, 100000]},
        {"input_shape": [1, 3, 20000, 20000]},  # 4.8 GB: fits in RAM, still refused
        {"input_shape": [1, 3, "64", 64]},
        {"input_size": 1000000},
        {"input_size": "abc"},
        {"input_size": [0, -5]},
        {"input_size": [64, 64, 64]},
        {"kind": "heatmap", "input_size": [64, 64], "std": [0, 1, 1]},
        {"kind": "heatmap", "input_size": [64, 64], "mean": ["x", 0, 0]},
        {"keypoints": 17},
    ],
)
def test_bad_manifests_are_422_and_store_nothing(
    client: TestClient, tiny_onnx: Path, manifest: dict
):
    response = upload(client, tiny_onnx, manifest=json.dumps(manifest))
    assert response.status_code == 422, response.text
    assert_error_shape(response.json(), "upload_rejected")
    assert client.get("/models").json() == []


@pytest.mark.parametrize("side", [100_000, 20_000])
def test_huge_declared_inputs_are_refused_without_allocating(
    client: TestClient, tmp_path: Path, side: int
):
    model = _relu_onnx(tmp_path / "huge.onnx", [1, 3, side, side])
    response = upload(client, model)
    assert response.status_code == 422, response.text
    assert "dry-run limit" in response.json()["error"]["message"]
    small = upload(client, _relu_onnx(tmp_path / "small.onnx", [1, 3, 64, 64]))
    assert small.status_code == 201, small.text


def test_the_cleaned_file_name_is_recorded(client: TestClient, tiny_onnx: Path):
    response = client.post(
        "/models",
        data={"name": "tiny"},
        files={"file": ("../../../../x y.onnx", tiny_onnx.read_bytes())},
    )
    assert response.status_code == 201, response.text
    version = client.get("/models/tiny/versions/1").json()
    assert version["recipe"]["filename"] == "x_y.onnx"
    assert {a["filename"] for a in version["artifacts"]} == {"x_y.onnx"}
