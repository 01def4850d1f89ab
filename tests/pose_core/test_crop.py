import numpy as np

from pose_core.inference.crop import (
    CropRect,
    apply_affine,
    crop_to_image_matrix,
    invert_affine,
    warp_crop,
)


def test_axis_aligned_crop_copies_pixels() -> None:
    image = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3)
    rect = CropRect(cx=6.0, cy=5.0, width=4.0, height=4.0)
    out = warp_crop(image, rect, 4, 4)
    np.testing.assert_allclose(out, image[3:7, 4:8], atol=1e-4)


def test_rotated_crop_maps_points_back_and_forth() -> None:
    rect = CropRect(cx=50.0, cy=40.0, width=30.0, height=20.0, rotation=0.7)
    m = crop_to_image_matrix(rect, 64, 32)
    pts = np.array([[0.0, 0.0], [64.0, 32.0], [32.0, 16.0]])
    back = apply_affine(invert_affine(m), apply_affine(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(apply_affine(m, pts[2]), [50.0, 40.0], atol=1e-9)


def test_outside_image_is_zero() -> None:
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    out = warp_crop(image, CropRect(cx=-100.0, cy=-100.0, width=8, height=8), 4, 4)
    assert out.shape == (4, 4, 3)
    assert float(out.max()) == 0.0
