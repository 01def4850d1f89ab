"""Training / calibration data of compression steps: person crops and what handlers receive.

Two public types matter to every compression method (INT8 calibration included):

* :class:`CropSet` -- ``images`` (N, 3, 256, 256) float32 in [0, 1] (the landmark model's input;
  a heatmap or SimCC model's crops are its own input format instead:
  :class:`~pose_core.compression.pose_format.CropFormat`)
  and optional ``targets`` (N, 33, 3): BlazePose-33 ``(x, y, v)`` in crop pixels, ``v > 0`` where a
  ground-truth label exists (COCO-17 labels mapped through ``BLAZEPOSE33_TO_COCO17``).
  Build it with :func:`~pose_core.compression.crops.build_cropset` from COCO-style dataset dirs
  (:mod:`pose_core.compression.crops`).
* :class:`CompressionData` -- what ``compress(model, config, data)`` receives: the train crops,
  an optional evaluation dataset dir, a work dir (checkpoints live under it, so a killed job
  resumes),
  a progress callback ``progress(fraction in [0, 1], message)`` and a cancellation probe
  ``should_stop() -> bool``. ``teacher`` is the model to distil from (``None`` = the step's input).

Example (INT8 calibration)::

    from pose_core.compression.crops import build_cropset

    crops = build_cropset([Path("data/dev")], augment=AugmentConfig(copies=4), seed=0)
    for batch in crops.batches(8): ...   # (8, 3, 256, 256) float32 numpy arrays
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pose_core.compression.pose_format import BLAZEPOSE_FORMAT, PoseFormat
from pose_core.inference.crop import CropRect

if TYPE_CHECKING:
    import torch


logger = logging.getLogger(__name__)

CROP_SIZE = 256
NUM_BODY_LANDMARKS = 33
#: Turns an RGB uint8 image (H, W, 3) into person crop rectangles (image pixels).
Detector = Callable[[np.ndarray], Sequence[CropRect]]
ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


def _no_progress(fraction: float, message: str) -> None:
    logger.debug("progress %.3f %s", fraction, message)


def _never_stop() -> bool:
    return False


@dataclass(frozen=True)
class AugmentConfig:
    """Random crop perturbations; every copy of a source crop draws its own values."""

    copies: int = 1  #: augmented copies per source crop (besides the plain one if ``keep_plain``)
    keep_plain: bool = True  #: also keep the un-augmented crop
    scale_range: tuple[float, float] = (0.85, 1.2)  #: multiplies the crop side
    shift: float = 0.05  #: max centre shift, fraction of the crop side
    rotation_deg: float = 20.0  #: max absolute rotation
    flip_prob: float = 0.5
    brightness: float = 0.2  #: max relative change
    contrast: float = 0.2
    saturation: float = 0.2


@dataclass(frozen=True)
class CropSource:
    """One person crop before augmentation: its image, rectangle and optional labels."""

    image_path: Path
    rect: CropRect
    keypoints33: np.ndarray | None = None  #: (33, 3) x, y, v in image pixels, v=0 unlabelled


@dataclass(frozen=True)
class CropSet:
    """Model-input crops: ``images`` (N, 3, 256, 256) float32 in [0, 1]; ``targets`` (N, 33, 3)."""

    images: np.ndarray
    targets: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {self.images.shape}")
        if self.targets is not None and self.targets.shape != (
            len(self.images),
            NUM_BODY_LANDMARKS,
            3,
        ):
            raise ValueError(f"targets must be (N, 33, 3), got {self.targets.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_labels(self) -> bool:
        return self.targets is not None and bool((self.targets[..., 2] > 0).any())

    def subset(self, indices: Sequence[int] | np.ndarray) -> CropSet:
        idx = np.asarray(indices, dtype=np.int64)
        return CropSet(self.images[idx], None if self.targets is None else self.targets[idx])

    def spread(self, n: int) -> np.ndarray:
        """Indices of ``n`` crops evenly spread over the set: crops come grouped by source
        person (plain + augmented copies), and the first ``n`` would be a handful of people."""
        return np.unique(np.linspace(0, len(self) - 1, min(n, len(self))).round()).astype(np.int64)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive image batches (the last may be smaller), for calibration or evaluation."""
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size]

    def tensor(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.images[np.asarray(indices, dtype=np.int64)])

    @staticmethod
    def concat(parts: Sequence[CropSet]) -> CropSet:
        if not parts:
            raise ValueError("nothing to concatenate")
        images = np.concatenate([p.images for p in parts])
        if all(p.targets is None for p in parts):
            return CropSet(images)
        targets = np.concatenate(
            [
                p.targets
                if p.targets is not None
                else np.zeros((len(p), NUM_BODY_LANDMARKS, 3), np.float32)
                for p in parts
            ]
        )
        return CropSet(images, targets)


@dataclass(frozen=True)
class HeldOut:
    """Plain crops of the images a job set aside (see
    :func:`~pose_core.compression.crops.build_split`)."""

    crops: CropSet
    images: tuple[str, ...]  #: file names of the held-out images

    def describe(self) -> dict[str, Any]:
        return {
            "n_crops": len(self.crops),
            "n_images": len(self.images),
            "images": list(self.images),
            "rule": "images with the lowest sha256 of their file name; no augmentation",
        }


@dataclass(frozen=True)
class CompressionData:
    """Everything a compression handler needs besides the model and its config."""

    train: CropSet
    work_dir: Path
    eval_dataset_dir: Path | None = None
    progress: ProgressFn = field(default=_no_progress)
    should_stop: StopFn = field(default=_never_stop)
    teacher: Any = None  #: torch.nn.Module to distil from; None = the step's input model
    seed: int = 0
    #: crops of images that no step trains or calibrates on: budget checks and target searches
    held_out: HeldOut | None = None
    latency_rounds: int = 50  #: interleaved rounds of a budget check's latency ratio
    #: the model's crops and outputs (fidelity, distillation objective); BlazePose's by default
    pose: PoseFormat = BLAZEPOSE_FORMAT

    def for_step(self, name: str, start: float, end: float) -> CompressionData:
        """A copy for one sub-step: own work dir, progress mapped into ``[start, end]``."""
        outer = self.progress

        def progress(fraction: float, message: str) -> None:
            outer(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

        return replace(self, work_dir=self.work_dir / name, progress=progress)


# ---------------------------------------------------------------------------------------- sources


# ----------------------------------------------------------------------------------- augmentation


