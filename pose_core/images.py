"""Pillow images to 8-bit RGB, high bit depths included (serving and datasets share it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

#: 16-bit sample -> 8-bit: 65535 / 257 = 255.
_SIXTEEN_TO_EIGHT = 257.0


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit RGB image. Integer modes (``I;16*`` and ``I``: 16-bit PNG
    grayscale) are scaled to 8 bits; Pillow's ``convert("RGB")`` would clip them to white."""
    from PIL import Image

    if image.mode.startswith("I"):
        samples = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(samples / _SIXTEEN_TO_EIGHT), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")
