from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pose_core.inference import detector, landmarks
from pose_core.inference.crop import (
    CropRect,
    apply_affine,
    crop_to_image_matrix,
    crops_to_batch,
    invert_affine,
    warp_crop,
    warp_crops,
)
from pose_core.inference.landmarks import BlazePoseLandmarkModel
from pose_core.inference.pipeline import PosePipeline

DATA = Path(__file__).resolve().parents[2] / "data"
PARITY_PHOTOS = sorted(
    f"dev_subset/images/{p.name}" for p in (DATA / "dev_subset/images").iterdir()
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


def reference_warp(image: np.ndarray, rect: CropRect, out_w: int, out_h: int) -> np.ndarray:
    """Exact bilinear sampling in float (the sampler before OpenCV), zero outside the image."""
    matrix = crop_to_image_matrix(rect, out_w, out_h)
    ys, xs = np.meshgrid(np.arange(out_h) + 0.5, np.arange(out_w) + 0.5, indexing="ij")
    src = apply_affine(matrix, np.stack([xs, ys], axis=-1)) - 0.5
    height, width = image.shape[:2]
    x0, y0 = np.floor(src[..., 0]).astype(int), np.floor(src[..., 1]).astype(int)
    fx, fy = (src[..., 0] - x0)[..., None], (src[..., 1] - y0)[..., None]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        inside = (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
        values = image[np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)].astype(np.float64)
        return values * inside[..., None]

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def test_crops_of_a_photo_match_exact_bilinear_sampling() -> None:
    image = np.asarray(Image.open(DATA / "ultralytics_zidane.jpg").convert("RGB"))
    rects = [
        CropRect(640.0, 360.0, 1280.0, 1280.0),  # the detector's letterbox (padding)
        CropRect(880.3, 410.7, 520.0, 520.0, 0.3),
        CropRect(60.0, 650.0, 300.0, 300.0, -2.5),  # mostly outside
    ]
    crops = warp_crops(image, rects, 256, 256)
    assert crops.shape == (3, 256, 256, 3) and crops.dtype == np.float32
    for crop, rect in zip(crops, rects, strict=True):
        # OpenCV places samples on a 1/32 px grid: well under one grey level on a photo
        error = np.abs(crop - reference_warp(image, rect, 256, 256))
        assert error.max() < 0.5 and error.mean() < 0.05


def test_crops_to_batch_is_nchw_scaled() -> None:
    crops = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    batch = crops_to_batch(crops, 2.0 / 255.0, -1.0)
    assert batch.shape == (2, 3, 4, 5) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, crops.transpose(0, 3, 1, 2) * 2.0 / 255.0 - 1.0, atol=1e-6)
    per_channel = crops_to_batch(crops, np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1), 0.0)
    np.testing.assert_allclose(per_channel[:, 2], crops[..., 2] * 3.0)


@pytest.fixture(scope="module")
def onnx_pipeline() -> PosePipeline:
    from serving_support import cached_bundle

    from pose_core.inference.runtime import OnnxRunner

    bundle = cached_bundle()
    return PosePipeline(
        BlazePoseLandmarkModel(OnnxRunner(bundle.artifacts["model"], threads=2)),
        OnnxRunner(bundle.artifacts["detector"], threads=2),
    )


@pytest.mark.parametrize(
    "photo",
    ["ultralytics_bus.jpg", "ultralytics_zidane.jpg", *PARITY_PHOTOS],
)
def test_pipeline_matches_exact_sampling_on_photos(
    onnx_pipeline: PosePipeline, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = np.asarray(Image.open(DATA / photo).convert("RGB"))
    people = onnx_pipeline.predict(image)

    def exact(image: np.ndarray, rects: list[CropRect], out_w: int, out_h: int) -> np.ndarray:
        return np.stack([reference_warp(image, r, out_w, out_h) for r in rects]).astype("f4")

    monkeypatch.setattr(detector, "warp_crops", exact)
    monkeypatch.setattr(landmarks, "warp_crops", exact)
    expected = onnx_pipeline.predict(image)
    assert len(people) == len(expected) > 0
    for person, reference in zip(people, expected, strict=True):
        assert person.landmarks is not None and reference.landmarks is not None
        moved = np.linalg.norm(person.landmarks[:, :2] - reference.landmarks[:, :2], axis=1)
        assert moved.max() < 0.1  # image pixels
