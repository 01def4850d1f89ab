import numpy as np

from pose_core.inference.anchors import POSE_DETECTION_ANCHORS, generate_anchors


def test_pose_detector_has_2254_anchors_in_mediapipe_order() -> None:
    anchors = generate_anchors(POSE_DETECTION_ANCHORS)
    assert anchors.shape == (2254, 4)
    # stride 8: 28 x 28 cells x 2 anchors, then stride 16: 14 x 14 x 2, then stride 32
    # (three merged layers): 7 x 7 x 6.
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2, :2], [1.5 / 28, 0.5 / 28], rtol=1e-6)
    np.testing.assert_allclose(anchors[28 * 28 * 2 - 1, :2], [27.5 / 28, 27.5 / 28], rtol=1e-6)
    np.testing.assert_allclose(anchors[28 * 28 * 2, :2], [0.5 / 14, 0.5 / 14], rtol=1e-6)
    first_stride32 = 28 * 28 * 2 + 14 * 14 * 2
    np.testing.assert_allclose(
        anchors[first_stride32 : first_stride32 + 6, :2], [[0.5 / 7] * 2] * 6
    )
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7, 1.0, 1.0], rtol=1e-6)
    assert np.all(anchors[:, 2:] == 1.0)  # fixed_anchor_size
