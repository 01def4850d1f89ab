"""Decoding uploaded photos: phone MPO JPEGs and 16-bit PNGs give the right 8-bit RGB pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.errors import ApiError
from app.serving.images import _decode_jpeg_opencv, decode_image

ZIDANE = Path(__file__).resolve().parents[1] / "data" / "ultralytics_zidane.jpg"
LIMITS = {"max_bytes": 20_000_000, "max_pixels": 50_000_000}


def _mpo(first: Image.Image, second: Image.Image) -> bytes:
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second], quality=95)
    return buffer.getvalue()


def test_mpo_decodes_its_first_picture():
    first, second = Image.new("RGB", (40, 30), (250, 10, 10)), Image.new("RGB", (40, 30))
    data = _mpo(first, second)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    decoded = decode_image(data, **LIMITS)
    assert decoded.pixels.shape == (30, 40, 3)
    assert np.abs(decoded.pixels.astype(int) - [250, 10, 10]).max() <= 8


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    gray8 = np.asarray(Image.open(ZIDANE).convert("L").resize((160, 90)))
    buffer = io.BytesIO()
    Image.fromarray(gray8.astype(np.uint16) * 257).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
    decoded = decode_image(buffer.getvalue(), **LIMITS)
    assert decoded.pixels.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(decoded.pixels[..., channel], gray8)


@pytest.mark.parametrize("format", ["GIF", "TIFF", "BMP"])
def test_other_formats_stay_refused(format: str):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=format)
    with pytest.raises(ApiError) as caught:
        decode_image(buffer.getvalue(), **LIMITS)
    assert caught.value.status == 415


def _pillow_pixels(data: bytes) -> np.ndarray:
    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.mark.parametrize(
    "photo", [ZIDANE, *sorted((ZIDANE.parent / "dev_subset" / "images").glob("*.jpg"))]
)
def test_jpeg_pixels_equal_pillows(photo: Path):
    data = photo.read_bytes()
    assert _decode_jpeg_opencv(data, Image.open(io.BytesIO(data))) is not None  # the fast path
    assert np.array_equal(decode_image(data, **LIMITS).pixels, _pillow_pixels(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_as_pillow_does(orientation: int):
    pixels = np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(buffer.getvalue(), **LIMITS)
    assert decoded.pixels.shape == ((30, 50, 3) if orientation <= 4 else (50, 30, 3))
    assert np.array_equal(decoded.pixels, _pillow_pixels(buffer.getvalue()))


def test_jpeg_cut_short_is_refused_not_filled():
    data = ZIDANE.read_bytes()
    with pytest.raises(ApiError) as caught:
        decode_image(data[: len(data) // 2], **LIMITS)
    assert caught.value.status == 422
