"""A compression job may train on several datasets at once (a labelled set and a folder of
video frames, say): their people are pooled and held out by image as with one."""

from __future__ import annotations

import shutil
from pathlib import Path

from pose_core.compression.crops import training_crops

DATA = Path(__file__).parents[2] / "data"


def _split(dirs: list[Path]):
    return training_crops(
        dirs, augment_copies=0, seed=0, max_sources=None, detector=None, holdout_fraction=0.3
    )


def test_datasets_are_pooled_and_held_out_by_image(tmp_path: Path) -> None:
    frames = tmp_path / "frames"  # unlabelled: whole-image crops without a detector
    (frames / "images").mkdir(parents=True)
    for name in ("ultralytics_bus.jpg", "ultralytics_zidane.jpg"):
        shutil.copy(DATA / name, frames / "images" / name)
    labelled = DATA / "dev_subset"
    alone = [_split([d]) for d in (labelled, frames)]
    train, held = _split([labelled, frames])
    assert len(train) + len(held.crops) == sum(len(t) + len(h.crops) for t, h in alone)
    assert len(held.images) >= 1 and len(train) > 0
    names = {p.name for d in (labelled, frames) for p in (d / "images").glob("*.jpg")}
    assert set(held.images) < names  # whole images, some on each side
