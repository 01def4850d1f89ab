"""Decoding uploaded photos: phone MPO JPEGs and 16-bit PNGs give the right 8-bit RGB pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.errors import ApiError
from app.serving.images import decode_image

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
