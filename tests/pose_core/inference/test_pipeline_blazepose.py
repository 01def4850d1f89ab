"""End to end: BlazePose detector + landmark model on real photos (LiteRT and ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pose_core.inference.crop import CropRect
from pose_core.inference.drawing import draw_people
from pose_core.inference.landmarks import BlazePoseLandmarkModel
from pose_core.inference.pipeline import PipelineError, PosePipeline
from pose_core.inference.types import PersonPose

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"
NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 0, 5, 6, 11, 12
L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 13, 14, 15, 16


@pytest.fixture(scope="module")
def assets():
    from pose_core.assets import ensure_blazepose_assets

    return ensure_blazepose_assets(REPO / ".cache")


@pytest.fixture(scope="module")
def litert_pipeline(assets) -> PosePipeline:
    pytest.importorskip("ai_edge_litert")
    from pose_core.inference.litert import LiteRTRunner

    # landmarks, presence, heatmap (MediaPipe refines the landmarks with it)
    landmark = LiteRTRunner(assets.landmark_tflite, threads=2, outputs=(0, 1, 3))
    detector = LiteRTRunner(assets.detector_tflite, threads=2)
    return PosePipeline(BlazePoseLandmarkModel(landmark), detector)


def _image(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


def _assert_well_formed(people: list[PersonPose], image: np.ndarray) -> None:
    height, width = image.shape[:2]
    scores = [p.score for p in people]
    assert scores == sorted(scores, reverse=True)
    for person in people:
        x, y, w, h = person.bbox
        assert x >= 0 and y >= 0 and x + w <= width + 1e-6 and y + h <= height + 1e-6
        assert person.keypoints.shape == (17, 3)
        kx, ky, ks = person.keypoints.T
        assert np.all((kx >= x - 1e-4) & (kx <= x + w + 1e-4)), "keypoint outside its box"
        assert np.all((ky >= y - 1e-4) & (ky <= y + h + 1e-4)), "keypoint outside its box"
        assert np.all((ks >= 0) & (ks <= 1)) and 0.5 <= person.score <= 1.0
        assert person.landmarks is not None and person.landmarks.shape == (39, 5)


def _assert_standing(person: PersonPose) -> None:
    y = person.keypoints[:, 1]
    shoulders = (y[L_SHOULDER] + y[R_SHOULDER]) / 2
    hips = (y[L_HIP] + y[R_HIP]) / 2
    knees = (y[L_KNEE] + y[R_KNEE]) / 2
    ankles = (y[L_ANKLE] + y[R_ANKLE]) / 2
    assert y[NOSE] < shoulders < hips < knees < ankles
    torso = hips - shoulders
    assert torso > 0.15 * person.bbox[3]


def test_bus_finds_the_two_men_with_visible_faces(litert_pipeline: PosePipeline) -> None:
    # The photo shows 4 people; two are cut by the image border with their faces outside
    # it, and BlazePose's detector is anchored on faces: it finds the two men in front.
    image = _image("ultralytics_bus.jpg")
    people = litert_pipeline.predict(image)
    _assert_well_formed(people, image)
    assert len(people) == 2
    centres = sorted(p.bbox[0] + p.bbox[2] / 2 for p in people)
    assert centres[0] < 250 < centres[1] < 400  # man in the beige coat, man in black
    for person in people:
        _assert_standing(person)
        assert person.bbox[3] > 0.3 * image.shape[0]


def test_zidane_finds_both_men(litert_pipeline: PosePipeline) -> None:
    image = _image("ultralytics_zidane.jpg")
    people = litert_pipeline.predict(image)
    _assert_well_formed(people, image)
    assert len(people) == 2
    noses = sorted(float(p.keypoints[NOSE, 0]) for p in people)
    assert noses[0] < image.shape[1] / 2 < noses[1]  # one face left of centre, one right
    for person in people:
        kp = person.keypoints
        assert kp[NOSE, 1] < (kp[L_SHOULDER, 1] + kp[R_SHOULDER, 1]) / 2


def test_max_people_and_min_score(litert_pipeline: PosePipeline) -> None:
    image = _image("ultralytics_bus.jpg")
    assert len(litert_pipeline.predict(image, max_people=1)) == 1
    assert litert_pipeline.predict(image, max_people=0) == []
    assert litert_pipeline.predict(image, min_score=1.01) == []


def test_single_full_image_pass_is_mediapipe(litert_pipeline: PosePipeline) -> None:
    # MediaPipe's single detector pass over the letterboxed image sees one person here.
    single = PosePipeline(litert_pipeline.landmark, litert_pipeline.detector, tile_fraction=None)
    image = _image("ultralytics_bus.jpg")
    people = single.predict(image)
    assert len(people) == 1
    tiled = litert_pipeline.predict(image)
    np.testing.assert_allclose(people[0].keypoints, tiled[0].keypoints, atol=1e-3)


def test_timings_cover_the_stages(litert_pipeline: PosePipeline) -> None:
    people, timings = litert_pipeline.predict_timed(_image("ultralytics_zidane.jpg"))
    assert set(timings) == {"detect", "landmarks", "total"}
    assert all(v > 0 for v in timings.values())
    assert timings["total"] >= timings["detect"] + timings["landmarks"] - 1e-6
    assert len(people) == 2


def test_predict_in_rects_top_down(litert_pipeline: PosePipeline) -> None:
    image = _image("ultralytics_bus.jpg")
    rects = litert_pipeline.detect_rois(image)
    assert len(rects) == 2
    in_rects = litert_pipeline.predict_in_rects(image, rects)
    detected = litert_pipeline.predict(image)
    for person in in_rects:
        match = min(detected, key=lambda p: abs(p.bbox[0] - person.bbox[0]))
        np.testing.assert_allclose(person.keypoints, match.keypoints, atol=1e-3)
    # a ground-truth-box style crop (square, 1.25 x the box, upright) finds the same person
    x, y, w, h = detected[0].bbox
    boxed = litert_pipeline.predict_in_rects(image, [CropRect.square_around_box(x, y, w, h, 1.25)])
    assert len(boxed) == 1
    error = np.linalg.norm(boxed[0].keypoints[:, :2] - detected[0].keypoints[:, :2], axis=1)
    assert np.median(error) < 0.05 * h
    assert litert_pipeline.predict_in_rects(image, []) == []


def test_heatmap_refinement_moves_landmarks_a_little(litert_pipeline: PosePipeline, assets) -> None:
    from pose_core.inference.litert import LiteRTRunner

    plain = BlazePoseLandmarkModel(LiteRTRunner(assets.landmark_tflite, 2, outputs=(0, 1)))
    image = _image("ultralytics_bus.jpg")
    rects = litert_pipeline.detect_rois(image)
    refined = litert_pipeline.predict_in_rects(image, rects)
    unrefined = plain.estimate(image, rects)
    for a, b in zip(refined, unrefined, strict=True):
        shift = np.linalg.norm(a.keypoints[:, :2] - b.keypoints[:, :2], axis=1)
        assert shift.max() > 0 and np.median(shift) < 0.03 * a.bbox[3]
        np.testing.assert_allclose(a.keypoints[:, 2], b.keypoints[:, 2])


def test_without_detector_only_rects_work(litert_pipeline: PosePipeline) -> None:
    top_down = PosePipeline(litert_pipeline.landmark, detector=None)
    image = _image("ultralytics_bus.jpg")
    with pytest.raises(PipelineError):
        top_down.predict(image)
    people = top_down.predict_in_rects(image, [CropRect(180, 700, 700, 700)])
    assert len(people) == 1 and people[0].keypoints.shape == (17, 3)


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 3))]
)
def test_bad_images_are_rejected(litert_pipeline: PosePipeline, bad: np.ndarray) -> None:
    with pytest.raises(PipelineError):
        litert_pipeline.predict(bad)


def test_draw_people_marks_keypoints(litert_pipeline: PosePipeline) -> None:
    image = _image("ultralytics_zidane.jpg")
    people = litert_pipeline.predict(image)
    drawn = draw_people(Image.fromarray(image), people)
    assert drawn.size == (image.shape[1], image.shape[0]) and drawn.mode == "RGB"
    changed = np.any(np.asarray(drawn) != image, axis=-1)
    for person in people:
        for x, y, s in person.keypoints:
            if s >= 0.5:
                assert changed[min(int(y), image.shape[0] - 1), min(int(x), image.shape[1] - 1)]


@pytest.mark.slow
def test_onnx_runtime_export_matches_litert(
    assets, litert_pipeline: PosePipeline, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from pose_core.export import export_onnx
    from pose_core.importers.tflite import import_blazepose_detector, import_blazepose_landmark
    from pose_core.inference.runtime import OnnxRunner

    folder = tmp_path_factory.mktemp("onnx")
    landmark_model = import_blazepose_landmark(
        assets.landmark_tflite, outputs=("landmarks", "presence", "heatmap")
    )
    landmark = export_onnx(landmark_model, folder / "lm.onnx", (1, 3, 256, 256))
    detector = export_onnx(
        import_blazepose_detector(assets.detector_tflite), folder / "det.onnx", (1, 3, 224, 224)
    )
    served = PosePipeline(
        BlazePoseLandmarkModel(OnnxRunner(landmark, threads=2)), OnnxRunner(detector, threads=2)
    )
    for name in ("ultralytics_bus.jpg", "ultralytics_zidane.jpg"):
        image = _image(name)
        reference = litert_pipeline.predict(image)
        people = served.predict(image)
        _assert_well_formed(people, image)
        assert len(people) == len(reference) == 2
        for ours, ref in zip(people, reference, strict=True):
            np.testing.assert_allclose(ours.keypoints[:, :2], ref.keypoints[:, :2], atol=0.1)
            assert ours.score == pytest.approx(ref.score, abs=1e-3)
