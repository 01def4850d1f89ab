import math

import numpy as np
import pytest

from pose_core.inference.crop import apply_affine, crop_to_image_matrix
from pose_core.inference.roi import normalize_radians, roi_from_alignment_points


def test_upright_person_gives_unrotated_square() -> None:
    rect = roi_from_alignment_points(np.array([100.0, 200.0]), np.array([100.0, 120.0]))
    assert rect.cx == 100.0 and rect.cy == 200.0
    assert rect.width == rect.height == pytest.approx(2 * 80 * 1.25)
    assert rect.rotation == pytest.approx(0.0)


@pytest.mark.parametrize("angle_deg", [30.0, 90.0, -45.0, 180.0])
def test_rotated_person_ends_up_upright_in_the_crop(angle_deg: float) -> None:
    centre = np.array([300.0, 300.0])
    # body axis from hips to the scale point, rotated clockwise (image y points down)
    theta = math.radians(angle_deg)
    direction = np.array([math.sin(theta), -math.cos(theta)])
    rect = roi_from_alignment_points(centre, centre + 60.0 * direction, scale=1.0)
    assert rect.width == pytest.approx(120.0)
    matrix = crop_to_image_matrix(rect, 256, 256)
    # the crop's vertical axis through its centre maps onto the body axis
    top_middle = apply_affine(matrix, np.array([128.0, 0.0]))
    np.testing.assert_allclose(top_middle, centre + 60.0 * direction, atol=1e-6)
    assert -math.pi <= rect.rotation < math.pi


def test_normalize_radians() -> None:
    assert normalize_radians(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert normalize_radians(-3 * math.pi / 2) == pytest.approx(math.pi / 2)
    assert normalize_radians(0.5) == pytest.approx(0.5)
