"""Shared fixtures (add new ones; do not remove existing ones)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
#: Gitignored; CI downloads the mediapipe wheel here once.
ASSET_CACHE = REPO_ROOT / ".cache" / "assets"


def _seed_asset_cache_from_local_wheel() -> None:
    """Copy a mediapipe wheel found in ``<repo>/.cache`` into the asset cache (saves a download)."""
    if any(ASSET_CACHE.glob("*.tflite")) or any(ASSET_CACHE.glob("mediapipe-*.whl")):
        return
    for wheel in sorted((REPO_ROOT / ".cache").glob("mediapipe-0.10.21-*.whl")):
        ASSET_CACHE.mkdir(parents=True, exist_ok=True)
        partial = ASSET_CACHE / f".{wheel.name}.partial"
        shutil.copyfile(wheel, partial)
        partial.replace(ASSET_CACHE / wheel.name)
        return


@pytest.fixture(scope="session")
def blazepose_assets():  # -> pose_core.assets.BlazePoseAssets
    """Paths of the BlazePose landmark and detector ``.tflite`` files (cached in .cache/assets)."""
    from pose_core.assets import ensure_blazepose_assets

    _seed_asset_cache_from_local_wheel()
    return ensure_blazepose_assets(ASSET_CACHE)


@pytest.fixture(scope="session")
def blazepose_landmark_model(blazepose_assets):  # -> pose_core.models.graph.GraphModel
    """The imported landmark model (outputs landmarks, presence). Shared: do not mutate it;
    ``copy.deepcopy`` it first."""
    from pose_core.importers.tflite import import_blazepose_landmark

    return import_blazepose_landmark(blazepose_assets.landmark_tflite)


@pytest.fixture(scope="session")
def blazepose_detector_model(blazepose_assets):  # -> pose_core.models.graph.GraphModel
    """The imported detector (outputs regressors, scores). Shared: do not mutate it."""
    from pose_core.importers.tflite import import_blazepose_detector

    return import_blazepose_detector(blazepose_assets.detector_tflite)


def _square_crop(image, center_x: float, center_y: float, side: float, size: int):
    """A size x size float32 RGB crop in [0, 1]; outside the image is black."""
    import numpy as np
    from PIL import Image

    half = side / 2.0
    box = (round(center_x - half), round(center_y - half),
           round(center_x + half), round(center_y + half))
    crop = image.crop(box).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.float32) / 255.0


@pytest.fixture(scope="session")
def landmark_photo_crops():  # -> numpy (N, 3, 256, 256) float32 in [0, 1]
    """Real person crops for the landmark model: square 1.5 x max(w, h) around the labelled
    people (box side >= 50 px) of tests/data/dev_subset, plus the centre squares of the
    ultralytics photos. NCHW, RGB, [0, 1]."""
    import json

    import numpy as np
    from PIL import Image

    subset = TEST_DATA / "dev_subset"
    records = json.loads((subset / "annotations.json").read_text())
    files = {img["id"]: subset / "images" / img["file_name"] for img in records["images"]}
    crops = []
    for ann in records["annotations"]:
        x, y, w, h = ann["bbox"]
        if max(w, h) < 50:
            continue
        with Image.open(files[ann["image_id"]]) as img:
            crops.append(_square_crop(img.convert("RGB"), x + w / 2, y + h / 2,
                                      1.5 * max(w, h), 256))
    for name in ("ultralytics_bus.jpg", "ultralytics_zidane.jpg"):
        with Image.open(TEST_DATA / name) as img:
            rgb = img.convert("RGB")
            crops.append(_square_crop(rgb, rgb.width / 2, rgb.height / 2,
                                      min(rgb.size), 256))
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2))


@pytest.fixture(scope="session")
def detector_photo_inputs():  # -> numpy (N, 3, 224, 224) float32 in [-1, 1]
    """Whole photos of tests/data letterboxed (black bars) to 224 x 224, NCHW, RGB, [-1, 1]."""
    import numpy as np
    from PIL import Image

    names = ["ultralytics_bus.jpg", "ultralytics_zidane.jpg",
             *sorted(f"dev_subset/images/{p.name}" for p in
                     (TEST_DATA / "dev_subset" / "images").glob("*.jpg"))]
    inputs = []
    for name in names:
        with Image.open(TEST_DATA / name) as img:
            rgb = img.convert("RGB")
            inputs.append(_square_crop(rgb, rgb.width / 2, rgb.height / 2, max(rgb.size), 224))
    return np.ascontiguousarray(np.stack(inputs).transpose(0, 3, 1, 2) * 2.0 - 1.0)
