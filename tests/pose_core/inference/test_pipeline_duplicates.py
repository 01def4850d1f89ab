import numpy as np

from pose_core.inference.pipeline import box_iou_xywh, remove_duplicates, same_face
from pose_core.inference.types import PersonPose


def _person(face_x: float, body_shift: float, score: float, width: float = 100.0) -> PersonPose:
    keypoints = np.zeros((17, 3), dtype=np.float32)
    # face: nose, eyes, ears spread over 40 px around face_x
    keypoints[0:5, 0] = face_x + np.array([0.0, -8.0, 8.0, -20.0, 20.0])
    keypoints[0:5, 1] = 50.0
    keypoints[5:, 0] = face_x + body_shift
    keypoints[5:, 1] = np.linspace(80, 400, 12)
    keypoints[:, 2] = 0.9
    x0 = float(keypoints[:, 0].min())
    return PersonPose(bbox=(x0, 50.0, width, 350.0), score=score, keypoints=keypoints)


def test_box_iou() -> None:
    assert box_iou_xywh((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou_xywh((0, 0, 10, 10), (5, 0, 10, 10)) == 5 * 10 / 150
    assert box_iou_xywh((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0


def test_same_face_but_different_body_is_one_person() -> None:
    best = _person(200.0, 0.0, 0.95)
    twin = _person(215.0, -150.0, 0.8, width=400.0)  # same face, another body hypothesis
    neighbour = _person(320.0, 0.0, 0.9)  # face 120 px away: someone else
    assert same_face(best, twin) and not same_face(best, neighbour)
    kept = remove_duplicates([twin, neighbour, best], max_iou=0.6)
    assert [p.score for p in kept] == [0.95, 0.9]


def test_heavily_overlapping_boxes_are_one_person() -> None:
    a = _person(200.0, 0.0, 0.7)
    b = _person(200.0, 0.0, 0.9)
    assert remove_duplicates([a, b], max_iou=0.6) == [b]
    assert len(remove_duplicates([a, b], max_iou=1.0)) == 1  # still the same face
