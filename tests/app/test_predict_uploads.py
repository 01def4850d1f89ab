"""Bring-your-own models through POST /models, then POST /predict on them: a BlazePose
``.tflite``, a top-down heatmap ``.onnx`` with its manifest, a state_dict for the built-in
architecture; a broken upload of each format answers 422 and stores nothing."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from service_support import assert_error_shape, stored_files
from serving_support import cached_bundle, store_builtin

from app.main import create_app
from common.settings import Settings
from model_store import open_store
from pose_core.builtin import BlazePoseBundle

TESTS = Path(__file__).resolve().parents[1]
ZIDANE = TESTS / "data" / "ultralytics_zidane.jpg"
COCO_MEAN, COCO_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def bundle(blazepose_assets) -> BlazePoseBundle:
    return cached_bundle(blazepose_assets.landmark_tflite.parent)


@pytest.fixture
def data_dir(bundle: BlazePoseBundle, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    store = open_store(f"sqlite:///{folder / 'metadata.sqlite3'}", folder)
    try:
        store_builtin(store, bundle)
    finally:
        store.close()
    return folder


@pytest.fixture
def client(data_dir: Path, broker_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=data_dir, redis_url=broker_url))) as test_client:
        yield test_client


def _upload(client: TestClient, name: str, filename: str, content: bytes, manifest=None):
    data = {"name": name}
    if manifest is not None:
        data["manifest"] = json.dumps(manifest)
    return client.post("/models", data=data, files={"file": (filename, content)})


def _predict(client: TestClient, model: str, **fields: str):
    files = {"image": ("zidane.jpg", ZIDANE.read_bytes(), "image/jpeg")}
    return client.post("/predict", data={"model": model, **fields}, files=files)


def _assert_rejected(client: TestClient, data_dir: Path, name: str, response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in {"upload_rejected", "empty_upload"}
    assert client.get(f"/models/{name}").status_code == 404
    artifacts = {p.name for p in stored_files(data_dir, "artifacts")}
    builtin = client.get("/models/blazepose-full/versions/1").json()["artifacts"]
    assert artifacts == {a["sha256"] for a in builtin}  # nothing new stored


def _roles(client: TestClient, name: str) -> set[str]:
    version = client.get(f"/models/{name}/versions/1").json()
    return {a["role"] for a in version["artifacts"]}


# ----------------------------------------------------------------------- ONNX heatmaps
def _heatmap_onnx(path: Path, channels: int = 17, size: int = 64) -> bytes:
    """A small real conv net: (N, 3, size, size) -> (N, channels, size/4, size/4) in (0, 1)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, channels, 3, stride=2, padding=1),
        torch.nn.Sigmoid(),
    ).eval()
    torch.onnx.export(
        model,
        (torch.rand(1, 3, size, size),),
        str(path),
        input_names=["image"],
        output_names=["heatmaps"],
        dynamic_axes={"image": {0: "batch"}, "heatmaps": {0: "batch"}},
        dynamo=False,
    )
    return path.read_bytes()


HEATMAP_MANIFEST = {
    "input_size": [64, 64],
    "mean": COCO_MEAN,
    "std": COCO_STD,
    "channel_order": "rgb",
    "keypoints": "coco17",
}


def test_onnx_heatmap_model_is_served_with_the_builtin_detector(
    client: TestClient, tmp_path: Path
) -> None:
    response = _upload(
        client, "tiny-heatmap", "tiny.onnx", _heatmap_onnx(tmp_path / "h.onnx"), HEATMAP_MANIFEST
    )
    assert response.status_code == 201, response.text
    version = client.get("/models/tiny-heatmap/versions/1").json()
    assert version["manifest"]["kind"] == "heatmap"
    prediction = _predict(client, "tiny-heatmap", min_score="0")
    assert prediction.status_code == 200, prediction.text
    body = prediction.json()
    assert body["model"] == "tiny-heatmap" and body["version"] == 1
    # one pose per person the built-in detector finds (2); an untrained net's poses spread
    # over the whole crop, so the two may overlap enough to be merged as one
    assert 1 <= len(body["people"]) <= 2
    for person in body["people"]:
        x, y, w, h = person["bbox"]
        assert len(person["keypoints"]) == 17
        for k in person["keypoints"]:
            assert x - 0.05 <= k["x"] <= x + w + 0.05 and y - 0.05 <= k["y"] <= y + h + 0.05
            assert 0 < k["score"] < 1


def test_named_keypoints_in_another_order_are_accepted(client: TestClient, tmp_path: Path) -> None:
    from pose_core.keypoints import COCO17_NAMES

    names = [*reversed(COCO17_NAMES), "neck"]
    content = _heatmap_onnx(tmp_path / "h18.onnx", channels=18)
    manifest = {**HEATMAP_MANIFEST, "keypoints": names}
    assert _upload(client, "named", "named.onnx", content, manifest).status_code == 201
    assert _predict(client, "named", min_score="0").status_code == 200


@pytest.mark.parametrize(
    ("case", "channels", "manifest"),
    [
        ("keypoint names lack COCO-17", 5, {**HEATMAP_MANIFEST, "keypoints": list("abcde")}),
        ("channel count differs", 8, HEATMAP_MANIFEST),
        ("no input_size", 17, {"keypoints": "coco17"}),
        ("bad std", 17, {**HEATMAP_MANIFEST, "std": [0.2, 0.0, 0.2]}),
    ],
)
def test_broken_onnx_heatmap_uploads_are_422(
    client: TestClient, data_dir: Path, tmp_path: Path, case: str, channels: int, manifest: dict
) -> None:
    content = _heatmap_onnx(tmp_path / "bad.onnx", channels=channels)
    _assert_rejected(client, data_dir, "bad", _upload(client, "bad", "bad.onnx", content, manifest))


def test_corrupt_onnx_is_422(client: TestClient, data_dir: Path) -> None:
    response = _upload(client, "bad", "bad.onnx", b"\x08\x07garbage" * 100, HEATMAP_MANIFEST)
    _assert_rejected(client, data_dir, "bad", response)


def test_generic_onnx_without_pose_manifest_cannot_predict(
    client: TestClient, tmp_path: Path
) -> None:
    content = _heatmap_onnx(tmp_path / "plain.onnx")
    assert _upload(client, "plain", "plain.onnx", content).status_code == 201
    response = _predict(client, "plain", version="1")
    assert response.status_code == 422
    assert_error_shape(response.json(), "not_servable")
    # it never becomes the default, so /predict without a version has nothing to serve
    assert client.get("/models/plain").json()["default"] is None
    unnamed = _predict(client, "plain")
    assert unnamed.status_code == 404
    assert "no default version" in unnamed.json()["error"]["message"]
    # a name that never served keypoints takes any valid model
    assert _upload(client, "plain", "plain.onnx", content).status_code == 201


# --------------------------------------------------- uploads under a name serving keypoints
def _served_version(client: TestClient) -> int:
    response = _predict(client, "blazepose-full", min_score="0")
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_an_upload_that_cannot_serve_under_a_serving_name_is_422_and_stores_nothing(
    client: TestClient, data_dir: Path, tmp_path: Path
) -> None:
    uploads = [
        ("plain.onnx", _heatmap_onnx(tmp_path / "plain.onnx")),  # no pose manifest
        ("tiny.tflite", _tiny_tflite()),  # not a BlazePose landmark model
    ]
    for filename, content in uploads:
        response = _upload(client, "blazepose-full", filename, content)
        assert response.status_code == 422, response.text
        assert_error_shape(response.json(), "upload_rejected")
        assert "serves keypoints" in response.json()["error"]["message"]
    versions = client.get("/models/blazepose-full/versions").json()
    assert [v["version"] for v in versions] == [1]
    builtin = {a["sha256"] for a in versions[0]["artifacts"]}
    assert {p.name for p in stored_files(data_dir, "artifacts")} == builtin
    assert _served_version(client) == 1


def test_a_servable_upload_is_served_by_default_only_once_the_alias_moves(
    client: TestClient, tmp_path: Path
) -> None:
    content = _heatmap_onnx(tmp_path / "h.onnx")
    response = _upload(client, "blazepose-full", "h.onnx", content, HEATMAP_MANIFEST)
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2
    model = client.get("/models/blazepose-full").json()
    assert (model["default"], model["latest"]) == (1, 2)
    assert _served_version(client) == 1
    moved = client.put("/models/blazepose-full/aliases/default", json={"version": 2})
    assert moved.status_code == 200, moved.text
    assert _served_version(client) == 2
    assert client.delete("/models/blazepose-full/versions/2").status_code == 409


# ----------------------------------------------------------------------------- TFLite
def _tflite_tiny() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tflite_tiny", TESTS / "tflite_tiny.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tflite_tiny"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _tiny_tflite() -> bytes:
    """(1, 16, 16, 3) -> conv 3x3 SAME + ReLU6 -> (1, 16, 16, 4)."""
    tt = _tflite_tiny()
    rng = np.random.default_rng(0)
    t = tt.TinyTflite()
    x = t.tensor((1, 16, 16, 3), name="input")
    w = t.tensor((4, 3, 3, 3), data=rng.normal(size=(4, 3, 3, 3)))
    b = t.tensor((4,), data=rng.normal(size=4))
    y = t.tensor((1, 16, 16, 4), name="features")
    t.op(tt.CONV_2D, [x, w, b], [y], tt.CONV_OPTIONS, tt.conv_options(tt.SAME, 1, tt.RELU6))
    return t.build([x], [y])


def test_tiny_tflite_is_converted_to_onnx_and_kept(client: TestClient) -> None:
    import onnx

    response = _upload(client, "tiny-tflite", "tiny.tflite", _tiny_tflite())
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "onnx"
    assert _roles(client, "tiny-tflite") == {"model", "recipe", "weights", "source"}
    model = client.get("/models/tiny-tflite/versions/1/artifact")
    onnx.checker.check_model(onnx.load_from_string(model.content))
    # no pose manifest: stored, but /predict says why it cannot serve it
    assert _predict(client, "tiny-tflite", version="1").status_code == 422


@pytest.mark.parametrize(
    "content", [b"", b"TFL3 but not a flatbuffer" * 10, b"\0" * 64], ids=["empty", "junk", "zeros"]
)
def test_broken_tflite_is_422(client: TestClient, data_dir: Path, content: bytes) -> None:
    _assert_rejected(client, data_dir, "bad", _upload(client, "bad", "bad.tflite", content))


def test_detector_tflite_is_refused(client: TestClient, data_dir: Path, blazepose_assets) -> None:
    content = blazepose_assets.detector_tflite.read_bytes()
    response = _upload(client, "bad", "pose_detection.tflite", content)
    _assert_rejected(client, data_dir, "bad", response)
    assert "detector" in response.json()["error"]["message"]


@pytest.mark.slow
def test_blazepose_landmark_tflite_serves_like_the_builtin(
    client: TestClient, blazepose_assets
) -> None:
    content = blazepose_assets.landmark_tflite.read_bytes()
    response = _upload(client, "my-blazepose", "pose_landmark_full.tflite", content)
    assert response.status_code == 201, response.text
    assert _roles(client, "my-blazepose") == {"model", "recipe", "weights", "source"}
    ours = _predict(client, "my-blazepose").json()["people"]
    builtin = _predict(client, "blazepose-full").json()["people"]
    assert len(ours) == len(builtin) == 2
    for a, b in zip(ours, builtin, strict=True):
        for ka, kb in zip(a["keypoints"], b["keypoints"], strict=True):
            assert abs(ka["x"] - kb["x"]) < 0.5 and abs(ka["y"] - kb["y"]) < 0.5


# ------------------------------------------------------------------------- state_dict
def _weights(bundle: BlazePoseBundle) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(bundle.artifacts["weights"]))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_for_the_builtin_architecture(
    client: TestClient, bundle: BlazePoseBundle, suffix: str
) -> None:
    from safetensors.torch import save

    state = _weights(bundle)
    if suffix == ".pt":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        content = buffer.getvalue()
    else:
        content = save(state)
    response = _upload(
        client, "sd", f"weights{suffix}", content, {"architecture": "blazepose-full"}
    )
    assert response.status_code == 201, response.text
    assert _roles(client, "sd") == {"model", "recipe", "weights", "source"}
    assert client.get("/models/sd/versions/1").json()["manifest"]["kind"] == "blazepose"
    ours = _predict(client, "sd").json()["people"]
    builtin = _predict(client, "blazepose-full").json()["people"]
    assert len(ours) == 2
    np.testing.assert_allclose([p["bbox"] for p in ours], [p["bbox"] for p in builtin], atol=0.5)
    if suffix == ".safetensors":  # under the built-in name it decodes: kept, not promoted
        again = _upload(
            client, "blazepose-full", "w.safetensors", content, {"architecture": "blazepose-full"}
        )
        assert again.status_code == 201, again.text
        model = client.get("/models/blazepose-full").json()
        assert (model["default"], model["latest"]) == (1, 2)


class _NotATensor:
    pass


def _broken_state_dicts(bundle: BlazePoseBundle) -> dict[str, tuple[str, bytes, dict | None]]:
    from safetensors.torch import save

    state = _weights(bundle)
    missing = dict(list(state.items())[1:])
    wrong_shape = {**state, next(iter(state)): torch.zeros(3)}
    pickled = io.BytesIO()
    torch.save({"weight": _NotATensor()}, pickled)
    arch = {"architecture": "blazepose-full"}
    return {
        "missing tensor": (".safetensors", save(missing), arch),
        "wrong shape": (".safetensors", save(wrong_shape), arch),
        "arbitrary pickle": (".pt", pickled.getvalue(), arch),
        "not safetensors": (".safetensors", b"garbage" * 10, arch),
        "no architecture": (".safetensors", save(state), None),
        "unknown architecture": (".safetensors", save(state), {"architecture": "nope"}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing tensor",
        "wrong shape",
        "arbitrary pickle",
        "not safetensors",
        "no architecture",
        "unknown architecture",
    ],
)
def test_broken_state_dicts_are_422(
    client: TestClient, data_dir: Path, bundle: BlazePoseBundle, case: str
) -> None:
    suffix, content, manifest = _broken_state_dicts(bundle)[case]
    response = _upload(client, "bad", f"weights{suffix}", content, manifest)
    _assert_rejected(client, data_dir, "bad", response)


# ----------------------------------------------------------------------- ONNX SimCC
def test_a_simcc_model_is_served_with_its_decoded_bins(
    client: TestClient, bundle: BlazePoseBundle, tmp_path: Path
) -> None:
    """The small SimCC net (random weights, constructed peaks per keypoint): every person
    /predict returns has its keypoints exactly where the bins decode in a detector crop."""
    from PIL import Image
    from simcc_support import (
        SIMCC_MANIFEST,
        expected_keypoints,
        export_simcc_onnx,
        spread_peaks,
        tiny_simcc,
    )

    from pose_core.inference.assemble import pose_pipeline
    from pose_core.inference.runtime import OnnxRunner

    peaks = spread_peaks()
    content = export_simcc_onnx(tiny_simcc(peaks=peaks), tmp_path / "simcc.onnx")
    response = _upload(client, "tiny-simcc", "simcc.onnx", content, SIMCC_MANIFEST)
    assert response.status_code == 201, response.text
    manifest = client.get("/models/tiny-simcc/versions/1").json()["manifest"]
    assert manifest["kind"] == "simcc" and manifest["simcc_outputs"] == [0, 1]
    prediction = _predict(client, "tiny-simcc", min_score="0")
    assert prediction.status_code == 200, prediction.text
    people = prediction.json()["people"]

    image = np.asarray(Image.open(ZIDANE).convert("RGB"))
    detector = OnnxRunner(bundle.artifacts["detector"].read_bytes(), 1)
    rects = pose_pipeline(manifest, lambda b: [b], detector).detect_rois(image)
    # keypoints outside the photo are clipped to its border
    border = [image.shape[1], image.shape[0]]
    unclipped = [expected_keypoints(rect, peaks) for rect in rects]
    inside = [((e > 0) & (e < border)).all(axis=1).sum() for e in unclipped]
    assert min(inside) >= 5  # the check below is mostly on unclipped keypoints
    expected = [np.clip(e, 0, border) for e in unclipped]
    assert 1 <= len(people) <= len(expected)
    for person in people:
        xy = np.array([[k["x"], k["y"]] for k in person["keypoints"]])
        errors = [float(np.abs(xy - e).max()) for e in expected]
        assert min(errors) < 0.01, errors
        assert all(k["score"] == pytest.approx(10.0, abs=0.1) for k in person["keypoints"])


def test_a_simcc_upload_whose_bins_do_not_fit_the_manifest_is_rejected(
    client: TestClient, data_dir: Path, tmp_path: Path
) -> None:
    from simcc_support import SIMCC_MANIFEST, export_simcc_onnx, tiny_simcc

    content = export_simcc_onnx(tiny_simcc(), tmp_path / "simcc.onnx")
    manifest = {**SIMCC_MANIFEST, "simcc_split_ratio": 3.0}
    response = _upload(client, "bad-simcc", "simcc.onnx", content, manifest)
    _assert_rejected(client, data_dir, "bad-simcc", response)
    assert "split ratio" in response.json()["error"]["message"]
