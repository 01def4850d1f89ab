import numpy as np

from pose_core.inference.detector import (
    MAX_TILES_PER_AXIS,
    Detections,
    decode_detections,
    detection_windows,
    detections_to_image,
    letterbox_rect,
    merge_windows,
    pose_anchors,
    preprocess_detector,
    weighted_nms,
)


def _detection(cx: float, cy: float, size: float, score: float, kp_dx: float = 0.0) -> Detections:
    box = np.array([[cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]])
    keypoints = np.array([[[cx + kp_dx, cy + 0.2], [cx, cy - 0.1], [cx, cy], [cx, cy - 0.05]]])
    return Detections(box, keypoints, np.array([score]))


def _concat(*dets: Detections) -> Detections:
    return Detections(
        np.concatenate([d.boxes for d in dets]),
        np.concatenate([d.keypoints for d in dets]),
        np.concatenate([d.scores for d in dets]),
    )


def test_decode_zero_regressors_gives_anchor_centres_and_filters_scores() -> None:
    anchors = pose_anchors()
    regressors = np.zeros((2254, 12), dtype=np.float32)
    regressors[:, 2:4] = 22.4  # box side 0.1 of the input
    logits = np.full((2254, 1), -10.0, dtype=np.float32)
    logits[[5, 100]] = [[3.0], [1.0]]
    logits[7] = 1000.0  # clipped at 100, still a valid probability
    dets = decode_detections(regressors, logits, anchors, min_score=0.6)
    assert len(dets) == 3
    np.testing.assert_allclose(dets.scores[0], 1.0)
    np.testing.assert_allclose(dets.scores[1:], 1 / (1 + np.exp([-3.0, -1.0])))
    centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    np.testing.assert_allclose(centres, anchors[[7, 5, 100], :2], atol=1e-6)
    np.testing.assert_allclose(dets.boxes[:, 2] - dets.boxes[:, 0], 0.1, atol=1e-6)
    np.testing.assert_allclose(dets.keypoints[:, 2], anchors[[7, 5, 100], :2], atol=1e-6)


def test_decode_offsets_scale_by_224() -> None:
    anchors = pose_anchors()
    regressors = np.zeros((2254, 12), dtype=np.float32)
    regressors[0, :2] = [22.4, -11.2]
    regressors[0, 4:6] = [44.8, 0.0]
    logits = np.full((2254,), -50.0, dtype=np.float32)
    logits[0] = 5.0
    dets = decode_detections(regressors, logits, anchors)
    centre = (dets.boxes[0, :2] + dets.boxes[0, 2:]) / 2
    np.testing.assert_allclose(centre, anchors[0, :2] + [0.1, -0.05], atol=1e-6)
    np.testing.assert_allclose(dets.keypoints[0, 0], anchors[0, :2] + [0.2, 0.0], atol=1e-6)


def test_weighted_nms_averages_overlapping_and_keeps_separate() -> None:
    dets = _concat(
        _detection(0.30, 0.30, 0.2, 0.9),
        _detection(0.32, 0.30, 0.2, 0.6, kp_dx=0.05),  # IoU ~0.82 with the first
        _detection(0.70, 0.70, 0.2, 0.8),  # disjoint
        _detection(0.30, 0.48, 0.2, 0.5),  # IoU ~0.05 with the first: kept
    )
    merged = weighted_nms(dets, iou_threshold=0.3)
    assert len(merged) == 3
    np.testing.assert_allclose(merged.scores, [0.9, 0.8, 0.5])
    expected_cx = (0.30 * 0.9 + 0.32 * 0.6) / 1.5
    np.testing.assert_allclose((merged.boxes[0, 0] + merged.boxes[0, 2]) / 2, expected_cx)
    np.testing.assert_allclose(merged.keypoints[0, 0, 0], (0.30 * 0.9 + 0.37 * 0.6) / 1.5)
    np.testing.assert_allclose(merged.boxes[1], dets.boxes[2])


def test_weighted_nms_of_nothing_is_nothing() -> None:
    empty = Detections(np.zeros((0, 4)), np.zeros((0, 4, 2)), np.zeros(0))
    assert len(weighted_nms(empty)) == 0


def test_letterbox_round_trip_to_image_pixels() -> None:
    rect = letterbox_rect(400, 200)  # padded 100 px above and below
    dets = _detection(0.5, 0.5, 0.5, 0.9)
    image = detections_to_image(dets, rect)
    np.testing.assert_allclose(image.boxes[0], [100.0, 0.0, 300.0, 200.0])
    image_tensor = np.zeros((200, 400, 3), dtype=np.uint8)
    batch = preprocess_detector(image_tensor, [rect])
    assert batch.shape == (1, 3, 224, 224)
    assert batch.min() == -1.0 and batch.max() == -1.0  # black image and black padding


def test_detector_input_range() -> None:
    image = np.full((50, 50, 3), 255, dtype=np.uint8)
    batch = preprocess_detector(image, [letterbox_rect(50, 50)])
    # white maps to 1 (the outermost samples blend with the black border)
    np.testing.assert_allclose(batch[..., 8:-8, 8:-8], 1.0, atol=1e-5)


def test_windows_cover_the_image() -> None:
    windows = detection_windows(810, 1080, tile_fraction=0.65)
    assert windows[0] == letterbox_rect(810, 1080)
    tiles = windows[1:]
    assert len(tiles) > 1
    assert all(t.width == t.height == 0.65 * 810 for t in tiles)
    left = min(t.cx - t.width / 2 for t in tiles)
    right = max(t.cx + t.width / 2 for t in tiles)
    top = min(t.cy - t.height / 2 for t in tiles)
    bottom = max(t.cy + t.height / 2 for t in tiles)
    np.testing.assert_allclose([left, top, right, bottom], [0, 0, 810, 1080], atol=1e-6)
    assert detection_windows(810, 1080, tile_fraction=None) == [letterbox_rect(810, 1080)]


def test_windows_are_bounded_on_elongated_images() -> None:
    windows = detection_windows(20000, 100)
    assert len(windows) == 1 + 2 * MAX_TILES_PER_AXIS  # two rows of 65 px tiles
    assert windows[1].cx - windows[1].width / 2 == 0.0
    assert max(w.cx + w.width / 2 for w in windows[1:]) == 20000.0


def test_merge_windows_keeps_best_of_one_person_and_both_of_two() -> None:
    # same person seen in two windows at different scales, plus another person
    a = _detection(100.0, 100.0, 40.0, 0.7)
    b = _detection(105.0, 102.0, 90.0, 0.9)
    other = _detection(400.0, 100.0, 40.0, 0.8)
    for d in (a, b, other):
        d.keypoints[0, 1] = d.keypoints[0, 0] + [0.0, -150.0]  # body radius 150
    merged = merge_windows([a, _concat(b, other)])
    assert len(merged) == 2
    np.testing.assert_allclose(merged.scores, [0.9, 0.8])
