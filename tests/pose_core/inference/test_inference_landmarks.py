import numpy as np
import pytest

from pose_core.inference.crop import CropRect
from pose_core.inference.landmarks import (
    decode_landmarks,
    heatmap_nchw,
    landmarks_to_person,
    preprocess_crops,
    refine_with_heatmaps,
)
from pose_core.keypoints import BLAZEPOSE33_TO_COCO17


def _reference_refine(xy: np.ndarray, logits: np.ndarray, kernel: int = 7) -> np.ndarray:
    """MediaPipe's loop, written out for one landmark: (x, y) crop pixels, (h, w) logits."""
    h, w = logits.shape
    col, row = int(xy[0] / 256 * w), int(xy[1] / 256 * h)
    half = (kernel - 1) // 2
    total = wx = wy = best = 0.0
    for r in range(max(0, row - half), min(h, row + half + 1)):
        for c in range(max(0, col - half), min(w, col + half + 1)):
            conf = 1 / (1 + np.exp(-logits[r, c]))
            total += conf
            wx += c * conf
            wy += r * conf
            best = max(best, conf)
    if best >= 0.5 and total > 0:
        return np.array([wx / w / total * 256, wy / h / total * 256])
    return xy


def test_refinement_follows_mediapipe() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(10, 246, size=(2, 39, 5))
    ys, xs = np.mgrid[0:64, 0:64]
    heatmaps = np.full((2, 39, 64, 64), -6.0)
    for n in range(2):
        for k in range(0, 39, 2):  # every other landmark has a confident blob near it
            cx, cy = raw[n, k, 0] / 4 + 1.3, raw[n, k, 1] / 4 - 0.8
            heatmaps[n, k] = 8 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 4.0) - 6
    refined = refine_with_heatmaps(raw.reshape(2, 195), heatmaps).reshape(2, 39, 5)
    for n in range(2):
        for k in range(39):
            expected = _reference_refine(raw[n, k, :2], heatmaps[n, k])
            np.testing.assert_allclose(refined[n, k, :2], expected, atol=1e-6)
    np.testing.assert_allclose(refined[:, 1::2], raw[:, 1::2])  # not confident: unchanged
    np.testing.assert_allclose(refined[..., 2:], raw[..., 2:])  # z, visibility, presence kept
    assert np.abs(refined[:, ::2, :2] - raw[:, ::2, :2]).max() > 1.0


def test_landmark_outside_heatmap_is_kept() -> None:
    raw = np.zeros((1, 39, 5))
    raw[0, :, :2] = [-30.0, 300.0]
    heatmaps = np.full((1, 39, 64, 64), 5.0)
    np.testing.assert_allclose(
        refine_with_heatmaps(raw.reshape(1, 195), heatmaps), raw.reshape(1, 195)
    )


def test_heatmap_layouts() -> None:
    nhwc = np.zeros((2, 64, 64, 39))
    assert heatmap_nchw(nhwc).shape == (2, 39, 64, 64)
    assert heatmap_nchw(np.zeros((2, 39, 64, 64))).shape == (2, 39, 64, 64)
    assert heatmap_nchw(np.zeros((2, 1, 256, 256))) is None
    assert heatmap_nchw(np.zeros((2, 117))) is None


def test_decode_projects_through_the_crop() -> None:
    rect = CropRect(cx=500.0, cy=300.0, width=512.0, height=512.0, rotation=np.pi / 2)
    image = np.zeros((600, 1000, 3), dtype=np.uint8)
    batch, matrices = preprocess_crops(image, [rect])
    assert batch.shape == (1, 3, 256, 256)
    raw = np.zeros((1, 39, 5))
    raw[0, :, :2] = [128.0, 0.0]  # top middle of the crop
    raw[0, :, 2] = 10.0
    raw[0, :, 3:] = [0.0, 2.0]
    out = decode_landmarks(raw.reshape(1, 195), matrices, [rect])
    # rotated by 90 degrees clockwise: the crop's top lies to the image's right of the centre
    np.testing.assert_allclose(out[0, :, :2], [[756.0, 300.0]] * 39, atol=1e-9)
    np.testing.assert_allclose(out[0, :, 2], 20.0)  # z scales like x: 512 / 256
    np.testing.assert_allclose(out[0, :, 3], 0.5)
    np.testing.assert_allclose(out[0, :, 4], 1 / (1 + np.exp(-2.0)), rtol=1e-6)


def test_person_keypoints_lie_in_the_clipped_box() -> None:
    landmarks = np.zeros((39, 5))
    landmarks[:33, 0] = np.linspace(-50, 150, 33)  # partly left of the image
    landmarks[:33, 1] = np.linspace(20, 260, 33)  # partly below it
    landmarks[:, 3] = 0.8
    landmarks[33:, :2] = 5000.0  # auxiliary points do not widen the box
    person = landmarks_to_person(landmarks, 0.9, width=120, height=240)
    x, y, w, h = person.bbox
    assert (x, y) == (0.0, 20.0) and x + w == 120.0 and y + h == 240.0
    kx, ky, ks = person.keypoints.T
    assert np.all((kx >= x) & (kx <= x + w) & (ky >= y) & (ky <= y + h))
    np.testing.assert_allclose(ks, 0.8)
    expected = np.clip(landmarks[list(BLAZEPOSE33_TO_COCO17), 0], 0, 120)
    np.testing.assert_allclose(kx, expected, rtol=1e-6)
    assert person.score == pytest.approx(0.9)
    assert person.landmarks is landmarks
