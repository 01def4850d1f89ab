import numpy as np
import pytest

from pose_core.inference.crop import CropRect
from pose_core.inference.heatmap import (
    HeatmapModel,
    HeatmapModelError,
    coco17_indices,
    decode_heatmaps,
    fit_rect_to_aspect,
)
from pose_core.keypoints import COCO17_NAMES


def _gaussian(h: int, w: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize(("x", "y"), [(20.3, 31.7), (5.5, 5.5), (40.9, 12.05)])
def test_gaussian_peak_recovered_to_sub_pixel(x: float, y: float) -> None:
    heatmaps = (0.8 * _gaussian(64, 48, x, y))[None, None]
    coords, scores = decode_heatmaps(heatmaps)
    np.testing.assert_allclose(coords[0, 0], [x, y], atol=1e-3)
    assert scores[0, 0] == pytest.approx(heatmaps.max())


def test_peak_on_the_border_uses_quarter_offset() -> None:
    heatmap = np.zeros((1, 1, 8, 8))
    heatmap[0, 0, 0, 3] = 1.0
    heatmap[0, 0, 0, 4] = 0.5
    coords, _ = decode_heatmaps(heatmap)
    np.testing.assert_allclose(coords[0, 0], [3.25, 0.0])


def test_coco17_indices_by_name() -> None:
    names = ["extra", *reversed(COCO17_NAMES)]
    indices = coco17_indices(names)
    assert [names[i] for i in indices] == list(COCO17_NAMES)
    assert coco17_indices("coco17") == list(range(17))
    with pytest.raises(HeatmapModelError, match="nose"):
        coco17_indices(list(COCO17_NAMES[1:]))


def test_fit_rect_to_aspect_enlarges_one_side() -> None:
    rect = fit_rect_to_aspect(CropRect(10, 20, 100, 100), 192, 256)
    assert (rect.width, rect.height) == pytest.approx((100, 100 * 256 / 192))
    rect = fit_rect_to_aspect(CropRect(10, 20, 30, 100), 192, 256)
    assert (rect.width, rect.height) == pytest.approx((75, 100))


def test_heatmap_model_maps_peaks_back_to_image_pixels() -> None:
    # A bright dot in the image; a "model" whose heatmaps peak where its input is brightest,
    # at a quarter of the input resolution. The decoded keypoint must land on the dot.
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[150:154, 240:244] = 255  # dot centre (242, 152) in continuous pixels

    def brightest_spot_model(batch: np.ndarray) -> list[np.ndarray]:
        n, _, h, w = batch.shape
        out = np.zeros((n, 17, h // 4, w // 4), dtype=np.float32)
        for i in range(n):
            lum = batch[i].sum(axis=0)
            ys, xs = np.nonzero(lum > lum.min() + 1.0)
            # input index coordinates of the dot centre -> heatmap index coordinates
            cx, cy = xs.mean() / 4.0, ys.mean() / 4.0
            out[i] = _gaussian(h // 4, w // 4, cx, cy)[None]
        return [out]

    model = HeatmapModel(
        brightest_spot_model,
        input_size=(192, 256),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        channel_order="bgr",
        keypoint_names="coco17",
    )
    rects = [CropRect(200, 150, 200, 200), CropRect(250, 140, 120, 160)]
    people = model.estimate(image, rects)
    assert len(people) == 2
    for person in people:
        np.testing.assert_allclose(person.keypoints[:, :2], [[242.0, 152.0]] * 17, atol=1.5)
        x, y, w, h = person.bbox
        kx, ky = person.keypoints[:, 0], person.keypoints[:, 1]
        assert np.all((kx >= x) & (kx <= x + w) & (ky >= y) & (ky <= y + h))
        assert person.score == pytest.approx(1.0, abs=0.05)
    assert model.estimate(image, []) == []


def test_heatmap_model_rejects_bad_description() -> None:
    with pytest.raises(HeatmapModelError):
        HeatmapModel(lambda b: [b], (192, 256), (0, 0, 0), (1, 0, 1), "rgb", "coco17")
    with pytest.raises(HeatmapModelError):
        HeatmapModel(lambda b: [b], (192, 256), (0, 0, 0), (1, 1, 1), "hsv", "coco17")  # type: ignore[arg-type]
