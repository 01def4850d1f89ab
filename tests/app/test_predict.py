"""POST /predict, /predict/batch and /models/{name}/versions/{ref}/predict on the real app
(SQLite store in a temp dir, private Redis) with the built-in BlazePose model stored."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_support import assert_error_shape, stored_files
from serving_support import cached_bundle, store_builtin

from app.main import create_app
from common.settings import Settings
from model_store import open_store
from pose_core.keypoints import COCO17_NAMES

DATA = Path(__file__).resolve().parents[1] / "data"
BUS, ZIDANE = DATA / "ultralytics_bus.jpg", DATA / "ultralytics_zidane.jpg"


@pytest.fixture(scope="module")
def data_dir(blazepose_assets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("predict") / "data"
    store = open_store(f"sqlite:///{folder / 'metadata.sqlite3'}", folder)
    try:
        store_builtin(store, cached_bundle(blazepose_assets.landmark_tflite.parent))
    finally:
        store.close()
    return folder


@pytest.fixture(scope="module")
def client(data_dir: Path, broker_url: str) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=data_dir,
        redis_url=broker_url,
        max_image_bytes=2_000_000,
        max_image_pixels=4_000_000,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _post(client: TestClient, path: Path | bytes, url: str = "/predict", **fields: str):
    content = path.read_bytes() if isinstance(path, Path) else path
    return client.post(url, data=fields, files={"image": ("photo.jpg", content, "image/jpeg")})


def _check_people(body: dict, width: int, height: int) -> None:
    assert body["image"] == {"width": width, "height": height}
    scores = [p["score"] for p in body["people"]]
    assert scores == sorted(scores, reverse=True)
    for person in body["people"]:
        x, y, w, h = person["bbox"]
        assert x >= 0 and y >= 0 and x + w <= width + 0.05 and y + h <= height + 0.05
        assert w > 0 and h > 0 and 0.5 <= person["score"] <= 1
        assert [k["name"] for k in person["keypoints"]] == list(COCO17_NAMES)
        for k in person["keypoints"]:
            assert x - 0.05 <= k["x"] <= x + w + 0.05 and y - 0.05 <= k["y"] <= y + h + 0.05
            assert 0 <= k["score"] <= 1


def _server_timing(header: str) -> dict[str, float]:
    parts = [item.strip().split(";dur=") for item in header.split(",")]
    return {name: float(value) for name, value in parts}


@pytest.mark.parametrize(("photo", "people"), [(BUS, 2), (ZIDANE, 2)])
def test_predict_finds_the_people(client: TestClient, photo: Path, people: int) -> None:
    # bus: 4 people, 2 of them cut by the border with their faces outside the photo; the
    # BlazePose detector is anchored on faces and finds the 2 others (see the report).
    response = _post(client, photo)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "blazepose-full" and body["version"] == 1
    with Image.open(photo) as image:
        _check_people(body, image.width, image.height)
    assert len(body["people"]) == people
    timing = _server_timing(response.headers["server-timing"])
    assert set(timing) == {"queue", "decode", "detect", "landmarks", "total"}
    assert timing["queue"] >= 0 and all(timing[k] > 0 for k in ("decode", "detect", "landmarks"))
    assert timing["total"] >= timing["detect"] + timing["landmarks"]


def test_phone_mpo_finds_the_people_of_its_first_picture(client: TestClient) -> None:
    with Image.open(ZIDANE) as photo:
        rgb = photo.convert("RGB")
    mpo = io.BytesIO()
    rgb.save(mpo, format="MPO", save_all=True, append_images=[rgb.resize((64, 36))], quality=95)
    response = _post(client, mpo.getvalue())
    assert response.status_code == 200, response.text
    _check_people(response.json(), 1280, 720)
    assert len(response.json()["people"]) == 2


def test_sixteen_bit_png_answers_like_its_eight_bit_twin(client: TestClient) -> None:
    with Image.open(ZIDANE) as photo:
        gray = np.asarray(photo.convert("L"))
    png8, png16 = io.BytesIO(), io.BytesIO()
    Image.fromarray(gray).save(png8, format="PNG")
    Image.fromarray(gray.astype(np.uint16) * 257).save(png16, format="PNG")
    eight, sixteen = _post(client, png8.getvalue()), _post(client, png16.getvalue())
    assert sixteen.status_code == 200, sixteen.text
    assert sixteen.json()["people"] == eight.json()["people"]
    assert len(sixteen.json()["people"]) >= 1


def test_zidane_people_stand_left_and_right(client: TestClient) -> None:
    body = _post(client, ZIDANE).json()
    noses = sorted(p["keypoints"][0]["x"] for p in body["people"])
    assert noses[0] < 640 < noses[1]
    for person in body["people"]:
        kp = {k["name"]: k for k in person["keypoints"]}
        assert kp["nose"]["y"] < (kp["left_shoulder"]["y"] + kp["right_shoulder"]["y"]) / 2


def test_version_alias_and_parameters(client: TestClient) -> None:
    assert (
        client.put("/models/blazepose-full/aliases/production", json={"version": 1}).status_code
        == 200
    )
    by_alias = _post(client, ZIDANE, model="blazepose-full", version="production").json()
    by_number = _post(client, ZIDANE, version="1").json()
    assert by_alias == by_number
    assert len(_post(client, ZIDANE, max_people="1").json()["people"]) == 1
    assert _post(client, ZIDANE, max_people="0").json()["people"] == []
    low, high = sorted(p["score"] for p in by_number["people"])
    if high > low:
        between = _post(client, ZIDANE, min_score=str((low + high) / 2)).json()["people"]
        assert [p["score"] for p in between] == [high]
    alias_route = _post(client, ZIDANE, url="/models/blazepose-full/versions/production/predict")
    assert alias_route.status_code == 200 and alias_route.json() == by_number


def test_single_pass_detector_is_a_per_request_choice(client: TestClient) -> None:
    """``detector=single`` runs MediaPipe's one full-image pass: on zidane (two people, one
    face small and far) it finds one of the two people the default tiled detector finds."""
    tiled = _post(client, ZIDANE).json()["people"]
    single = _post(client, ZIDANE, detector="single").json()["people"]
    assert len(tiled) == 2
    assert len(single) == 1
    best = max(tiled, key=lambda p: p["score"])
    assert max(abs(a - b) for a, b in zip(single[0]["bbox"], best["bbox"], strict=True)) < 40
    batch = client.post(
        "/predict/batch",
        data={"detector": "single"},
        files=[("images", ("z.jpg", ZIDANE.read_bytes(), "image/jpeg"))],
    ).json()
    assert len(batch["results"][0]["people"]) == 1
    bad = _post(client, ZIDANE, detector="fast")
    assert bad.status_code == 422


def test_format_png_draws_on_an_image_of_the_same_size(client: TestClient) -> None:
    response = _post(client, ZIDANE, format="png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "total;dur=" in response.headers["server-timing"]
    drawn = Image.open(io.BytesIO(response.content))
    assert drawn.format == "PNG" and drawn.size == (1280, 720)
    original = np.asarray(Image.open(ZIDANE).convert("RGB"))
    assert np.mean(np.any(np.asarray(drawn.convert("RGB")) != original, axis=-1)) > 0.001


def test_exif_orientation_is_applied(client: TestClient) -> None:
    # The zidane photo stored rotated by 90 degrees, with EXIF orientation 6 ("rotate 90 CW
    # to display"): the server must see it upright, 720 x 1280 -> 1280 x 720.
    upright = Image.open(ZIDANE).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    body = _post(client, buffer.getvalue()).json()
    assert body["image"] == {"width": 1280, "height": 720}
    assert len(body["people"]) == 2


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _bad_images() -> dict[str, tuple[bytes, int, str]]:
    photo = BUS.read_bytes()
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    bomb = io.BytesIO()
    Image.new("L", (3000, 2000)).save(bomb, format="PNG")  # 6 Mpx > the 4 Mpx limit, tiny file
    return {
        "empty": (b"", 422, "invalid_image"),
        "not an image": (b"%PDF-1.4 definitely not a photo", 422, "invalid_image"),
        "truncated": (photo[: len(photo) // 3], 422, "invalid_image"),
        "gif": (gif.getvalue(), 415, "unsupported_media_type"),
        "decompression bomb": (bomb.getvalue(), 413, "image_too_large"),
        "over max_image_bytes": (_jpeg() + b"\0" * 2_000_001, 413, "image_too_large"),
    }


@pytest.mark.parametrize("case", list(_bad_images()))
def test_bad_images_answer_4xx(client: TestClient, data_dir: Path, case: str) -> None:
    content, status, code = _bad_images()[case]
    before = stored_files(data_dir, "artifacts")
    response = _post(client, content)
    assert response.status_code == status, response.text
    assert_error_shape(response.json(), code)
    assert stored_files(data_dir, "artifacts") == before


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    for fields in ({"model": "nope"}, {"version": "7"}, {"version": "no-such-alias"}):
        response = _post(client, ZIDANE, **fields)
        assert response.status_code == 404, fields
        assert_error_shape(response.json(), "not_found")
    response = _post(client, ZIDANE, url="/models/nope/versions/latest/predict")
    assert response.status_code == 404


def test_bad_parameters_are_422(client: TestClient) -> None:
    for fields in ({"max_people": "-1"}, {"min_score": "2"}, {"format": "gif"}):
        response = _post(client, ZIDANE, **fields)
        assert response.status_code == 422, fields
        assert_error_shape(response.json(), "validation_error")
    missing = client.post("/predict", data={"model": "blazepose-full"})
    assert missing.status_code == 422


def test_batch_answers_per_image(client: TestClient) -> None:
    files = [
        ("images", ("bus.jpg", BUS.read_bytes(), "image/jpeg")),
        ("images", ("broken.jpg", b"not an image", "image/jpeg")),
        ("images", ("zidane.jpg", ZIDANE.read_bytes(), "image/jpeg")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "blazepose-full" and body["version"] == 1
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["filename"] for r in results] == ["bus.jpg", "broken.jpg", "zidane.jpg"]
    assert results[1]["error"]["code"] == "invalid_image" and "people" not in results[1]
    single = _post(client, ZIDANE).json()
    assert results[2]["people"] == single["people"]
    assert len(results[0]["people"]) == 2
    assert "detect;dur=" in response.headers["server-timing"]
    assert client.post("/predict/batch", data={"model": "nope"}, files=files[:1]).status_code == 404


def test_sessions_are_cached_per_artifact(client: TestClient) -> None:
    _post(client, ZIDANE)
    predictor = client.app.state.predictor  # type: ignore[attr-defined]
    version = predictor.store.models.resolve("blazepose-full", "latest")
    shas = {a.role: a.sha256 for a in version.artifacts}
    assert shas["model"] in predictor.sessions and shas["detector"] in predictor.sessions
    runner = predictor.sessions.get(shas["model"], lambda: pytest.fail("reloaded"))
    _post(client, ZIDANE)
    assert predictor.sessions.get(shas["model"], lambda: pytest.fail("reloaded")) is runner
