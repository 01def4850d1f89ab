"""Both evaluation modes with the real BlazePose pipeline (LiteRT runtime) on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pose_core.evaluation import EvaluationMode, evaluate_dataset
from pose_core.evaluation.dataset import load_dataset, load_rgb
from pose_core.evaluation.oks import EvaluationError
from pose_core.evaluation.protocol import GT_BOX_CROP_RULE, coco_keypoints, evaluate
from pose_core.inference.crop import CropRect
from pose_core.keypoints import COCO17_NAMES

pytest.importorskip("ai_edge_litert")

REPO = Path(__file__).resolve().parents[3]
DEV_SUBSET = REPO / "tests" / "data" / "dev_subset"


@pytest.fixture(scope="module")
def blazepose_assets():
    from pose_core.assets import ensure_blazepose_assets

    return ensure_blazepose_assets(REPO / ".cache")


@pytest.fixture(scope="module")
def litert_pipeline(blazepose_assets):
    from pose_core.inference.landmarks import BlazePoseLandmarkModel
    from pose_core.inference.litert import LiteRTRunner
    from pose_core.inference.pipeline import PosePipeline

    # TFLite outputs 0 landmarks, 1 presence, 3 heatmap (the served model's outputs)
    landmark = LiteRTRunner(blazepose_assets.landmark_tflite, threads=2, outputs=[0, 1, 3])
    detector = LiteRTRunner(blazepose_assets.detector_tflite, threads=2)
    return PosePipeline(BlazePoseLandmarkModel(landmark), detector)


def test_gt_box_mode_predicts_every_labelled_person(litert_pipeline) -> None:
    calls: list[tuple[int, int]] = []
    report = evaluate_dataset(
        litert_pipeline, DEV_SUBSET, "gt-boxes", progress=lambda d, t: calls.append((d, t))
    )
    dataset = load_dataset(DEV_SUBSET)
    assert report.mode is EvaluationMode.GT_BOXES
    assert report.crop_rule == GT_BOX_CROP_RULE
    assert report.n_images == len(dataset) == len(calls)
    assert calls[-1] == (len(dataset), len(dataset))
    assert report.n_people == report.n_predictions == report.n_matched == dataset.num_people
    # a real pose model on clean crops: clearly better than chance, not perfect
    assert 0.05 < report.ap <= report.ap50 <= 1.0
    assert 0.0 < report.ar <= 1.0
    assert report.pck is not None and 0.5 < report.pck <= 1.0
    assert list(report.per_keypoint_error_px) == list(COCO17_NAMES)
    assert report.mean_error_px is not None and report.mean_error_px > 0
    assert json.loads(json.dumps(report.to_dict()))["mode"] == "gt-boxes"


def test_detector_mode_matches_at_most_one_prediction_per_person(litert_pipeline) -> None:
    dataset = load_dataset(DEV_SUBSET)
    report = evaluate(litert_pipeline, dataset, EvaluationMode.DETECTOR)
    assert report.mode is EvaluationMode.DETECTOR
    assert report.n_predictions > 0
    assert report.n_matched <= min(report.n_predictions, report.n_people)
    assert 0.0 <= report.ap <= 1.0
    assert report.pck is not None


def test_gt_box_keypoints_land_near_the_labels(litert_pipeline) -> None:
    """The crop rule and the -0.5 px COCO convention put predictions on the labelled people."""
    dataset = load_dataset(DEV_SUBSET)
    record = dataset.images[0]
    person = record.people_with_keypoints[0]
    rect = CropRect.square_around_box(*person.bbox, 1.5)
    (pose,) = litert_pipeline.predict_in_rects(record.load(), [rect])
    predicted = coco_keypoints(pose)
    labelled = person.keypoints[:, 2] > 0
    error = np.linalg.norm(predicted[labelled, :2] - person.keypoints[labelled, :2], axis=1)
    assert np.median(error) < 0.1 * max(person.bbox[2], person.bbox[3])


def test_dataset_without_labels_is_an_error(litert_pipeline, tmp_path: Path) -> None:
    coco = json.loads((DEV_SUBSET / "annotations.json").read_text())
    coco["annotations"] = []
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    (tmp_path / "images").symlink_to(DEV_SUBSET / "images")
    with pytest.raises(EvaluationError):
        evaluate_dataset(litert_pipeline, tmp_path, "gt-boxes")


def test_fidelity_of_a_model_to_itself_is_perfect(litert_pipeline) -> None:
    from pose_core.evaluation.fidelity import fidelity_inputs, measure_fidelity

    inputs = list(fidelity_inputs(DEV_SUBSET))
    assert [boxes is not None for _, boxes in inputs] == [True] * len(inputs)
    inputs.append((load_rgb(REPO / "tests" / "data" / "ultralytics_zidane.jpg"), None))
    report = measure_fidelity(litert_pipeline, litert_pipeline, inputs)
    # every labelled person of the subset, plus the 2 people the detector finds in zidane
    assert report.n_people == load_dataset(DEV_SUBSET).num_people + 2
    assert report.mean_error_px == pytest.approx(0.0, abs=1e-6)
    assert report.mean_error_crop_px == pytest.approx(0.0, abs=1e-6)
    assert report.mean_oks == pytest.approx(1.0)


@pytest.mark.slow
def test_fidelity_sees_a_perturbed_student(litert_pipeline, blazepose_assets) -> None:
    import copy

    import torch

    from pose_core.builtin import LANDMARK_OUTPUTS
    from pose_core.evaluation.fidelity import fidelity_inputs, measure_fidelity
    from pose_core.importers.tflite import import_blazepose_landmark
    from pose_core.inference.landmarks import BlazePoseLandmarkModel
    from pose_core.inference.pipeline import PosePipeline

    imported = import_blazepose_landmark(
        blazepose_assets.landmark_tflite, outputs=LANDMARK_OUTPUTS
    ).eval()

    def student_with_noise(scale: float) -> PosePipeline:
        model = copy.deepcopy(imported)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(1 + scale * torch.randn(param.shape, generator=generator))

        def runner(batch: np.ndarray) -> list[np.ndarray]:
            with torch.no_grad():
                return [t.numpy() for t in model(torch.from_numpy(batch))]

        return PosePipeline(BlazePoseLandmarkModel(runner), detector=None)

    inputs = list(fidelity_inputs(DEV_SUBSET))[:2]  # a few people: torch eager is slow here
    n_people = sum(len(boxes or ()) for _, boxes in inputs)
    slight = measure_fidelity(student_with_noise(0.02), litert_pipeline, inputs)
    strong = measure_fidelity(student_with_noise(0.2), litert_pipeline, inputs)
    assert slight.n_people == strong.n_people == n_people
    assert slight.mean_error_crop_px is not None and strong.mean_error_crop_px is not None
    assert 0.0 < slight.mean_error_crop_px < strong.mean_error_crop_px
    assert slight.mean_oks is not None and strong.mean_oks is not None
    assert 1.0 > slight.mean_oks > strong.mean_oks
