"""Person crops of a dataset dir (pose_core.compression.crops)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from pose_core.compression.crops import build_cropset, coco_keypoints_to_blazepose33
from pose_core.compression.data import AugmentConfig
from pose_core.keypoints import BLAZEPOSE33_FLIP_PAIRS

DATA = Path(__file__).resolve().parents[2] / "data"


def _tiny_dataset(root: Path) -> Path:
    """One labelled person on the bus photo: a box and two keypoints (nose at the box centre)."""
    (root / "images").mkdir(parents=True)
    shutil.copy(DATA / "ultralytics_bus.jpg", root / "images" / "bus.jpg")
    keypoints = [0.0] * 51
    keypoints[0:3] = [150.0, 500.0, 2]  # nose (COCO 0) at the box centre
    keypoints[15:18] = [130.0, 520.0, 2]  # left shoulder (COCO 5)
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "num_keypoints": 2,
        "bbox": [100.0, 400.0, 100.0, 200.0],
        "keypoints": keypoints,
        "area": 20000.0,
    }
    coco = {
        "images": [{"id": 1, "file_name": "bus.jpg", "width": 810, "height": 1080}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def test_cropset_maps_labels_into_crops_flips_with_swap_and_is_deterministic(
    tmp_path: Path,
) -> None:
    dataset = _tiny_dataset(tmp_path / "ds")
    plain = build_cropset([dataset])
    assert plain.images.shape == (1, 3, 256, 256) and plain.images.dtype == np.float32
    assert plain.images.min() >= 0.0 and plain.images.max() <= 1.0
    assert plain.targets is not None
    np.testing.assert_allclose(plain.targets[0, 0, :2], [128.0, 128.0], atol=1e-3)  # nose, centre
    left_shoulder = 11
    # side 300 px -> 256 px: 20 px left and down of the centre
    np.testing.assert_allclose(
        plain.targets[0, left_shoulder, :2], [128 - 20 * 256 / 300, 128 + 20 * 256 / 300], atol=1e-3
    )

    mirror = AugmentConfig(
        copies=1,
        keep_plain=False,
        scale_range=(1.0, 1.0),
        shift=0.0,
        rotation_deg=0.0,
        flip_prob=1.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
    )
    flipped = build_cropset([dataset], augment=mirror)
    assert flipped.targets is not None
    np.testing.assert_allclose(flipped.images[0], plain.images[0][:, :, ::-1], atol=1e-6)
    right_shoulder = dict(BLAZEPOSE33_FLIP_PAIRS)[left_shoulder]
    np.testing.assert_allclose(
        flipped.targets[0, right_shoulder, 0], 256 - plain.targets[0, left_shoulder, 0], atol=1e-3
    )
    assert flipped.targets[0, left_shoulder, 2] == 0

    jitter = AugmentConfig(copies=3)
    a, b = (
        build_cropset([dataset], augment=jitter, seed=7),
        build_cropset([dataset], augment=jitter, seed=7),
    )
    assert len(a) == 4
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images[1], a.images[2])


def test_unlabelled_images_without_a_detector_give_whole_image_crops(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    shutil.copy(DATA / "ultralytics_zidane.jpg", tmp_path / "images" / "z.jpg")
    crops = build_cropset([tmp_path])
    assert len(crops) == 1 and crops.targets is None and not crops.has_labels


def test_every_dataset_image_format_gives_crops(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    with Image.open(DATA / "ultralytics_zidane.jpg") as img:
        small = img.convert("RGB").resize((64, 36))
    small.save(tmp_path / "images" / "a.webp")
    small.save(tmp_path / "images" / "b.bmp")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    assert len(build_cropset([tmp_path])) == 2


def test_coco_to_blazepose_mapping_places_each_keypoint() -> None:
    flat = np.arange(51, dtype=np.float32)
    mapped = coco_keypoints_to_blazepose33(flat.tolist())
    assert mapped.shape == (33, 3)
    np.testing.assert_array_equal(mapped[0], flat[0:3])  # nose
    np.testing.assert_array_equal(mapped[28], flat[48:51])  # right ankle
