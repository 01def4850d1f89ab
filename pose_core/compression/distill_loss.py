"""What distillation minimises and scores: the landmark model's outputs (:class:`PoseOutputs`), the
distillation loss (see :mod:`~pose_core.compression.distill` for its terms), the teacher's
cached outputs, the per-batch random augmentation, and the held-out landmark error that
early stopping scores."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pose_core.compression.base import CompressionError
from pose_core.compression.configs import RecoveryConfig
from pose_core.compression.data import NUM_BODY_LANDMARKS, CropSet
from pose_core.compression.features import (
    block_outputs,
    feature_loss,
    normalised_mse,
)

logger = logging.getLogger(__name__)


NUM_LANDMARKS = 39


@dataclass(frozen=True)
class PoseOutputs:
    landmarks: torch.Tensor  # (N, 39, 5)
    presence: torch.Tensor | None  # (N, 1) probability
    heatmap: torch.Tensor | None


def pose_outputs(raw: Any) -> PoseOutputs:
    """Interpret a landmark model's output: a tensor or ``(landmarks, presence, ...)``."""
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not items or items[0].shape[-1] != NUM_LANDMARKS * 5:
        raise CompressionError("the model's first output must be landmarks of shape (N, 195)")
    landmarks = items[0].reshape(items[0].shape[0], NUM_LANDMARKS, 5)
    presence = items[1].reshape(-1, 1) if len(items) > 1 else None
    heatmap = next((t for t in items[2:] if t.dim() == 4 and t.shape[-1] == NUM_LANDMARKS), None)
    return PoseOutputs(landmarks, presence, heatmap)


def distill_loss(
    student: PoseOutputs,
    teacher: PoseOutputs,
    cfg: RecoveryConfig,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sum of the distillation terms (see the module docstring); a scalar tensor."""
    s, t = student.landmarks, teacher.landmarks
    body = slice(0, NUM_BODY_LANDMARKS)
    vis = torch.sigmoid(t[:, body, 3]).clamp_min(0.05)
    beta = cfg.smooth_l1_beta_px
    xy = F.smooth_l1_loss(s[:, body, :2], t[:, body, :2], beta=beta, reduction="none").sum(-1)
    loss = cfg.landmark_weight * (xy * vis).sum() / vis.sum()
    if cfg.aux_weight:
        loss = loss + cfg.aux_weight * F.smooth_l1_loss(
            s[:, NUM_BODY_LANDMARKS:, :2], t[:, NUM_BODY_LANDMARKS:, :2], beta=beta
        )
    if cfg.z_weight:
        loss = loss + cfg.z_weight * F.smooth_l1_loss(s[:, body, 2], t[:, body, 2], beta=beta)
    if cfg.logit_weight:
        loss = loss + cfg.logit_weight * F.binary_cross_entropy_with_logits(
            s[:, body, 3:5], torch.sigmoid(t[:, body, 3:5])
        )
    if cfg.presence_weight and student.presence is not None and teacher.presence is not None:
        loss = loss + cfg.presence_weight * F.binary_cross_entropy(
            student.presence.clamp(1e-6, 1 - 1e-6), teacher.presence.clamp(0, 1)
        )
    if cfg.heatmap_weight and student.heatmap is not None and teacher.heatmap is not None:
        # NHWC: channels last, so normalise (N, C, H, W) views
        loss = loss + cfg.heatmap_weight * normalised_mse(
            student.heatmap.movedim(-1, 1), teacher.heatmap.movedim(-1, 1)
        )
    if cfg.gt_weight and targets is not None:
        labelled = (targets[..., 2] > 0).float()
        if labelled.sum() > 0:
            gt = F.smooth_l1_loss(
                s[:, body, :2], targets[..., :2], beta=beta, reduction="none"
            ).sum(-1)
            loss = loss + cfg.gt_weight * (gt * labelled).sum() / labelled.sum()
    return loss


class TeacherCache:
    """Teacher outputs per crop index, computed on first use (the crops never change)."""

    def __init__(self, teacher: torch.nn.Module, crops: CropSet) -> None:
        self.teacher, self.crops = teacher, crops
        self.outputs: dict[int, PoseOutputs] = {}

    def get(self, idx: np.ndarray) -> PoseOutputs:
        missing = [int(i) for i in idx if int(i) not in self.outputs]
        if missing:
            with torch.no_grad():
                out = pose_outputs(self.teacher(self.crops.tensor(missing)))
            for row, i in enumerate(missing):
                self.outputs[i] = PoseOutputs(
                    out.landmarks[row],
                    None if out.presence is None else out.presence[row],
                    None if out.heatmap is None else out.heatmap[row],
                )
        rows = [self.outputs[int(i)] for i in idx]
        return PoseOutputs(
            torch.stack([r.landmarks for r in rows]),
            None if rows[0].presence is None else torch.stack([r.presence for r in rows]),  # type: ignore[misc]
            None if rows[0].heatmap is None else torch.stack([r.heatmap for r in rows]),  # type: ignore[misc]
        )


def random_augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each crop of an (N, 3, H, W) batch in [0, 1] under its own random affine (rotation
    +-30 deg, scale 0.8-1.25, shift +-10%, horizontal flip; zero padding, as crops that leave
    the image are) and brightness / contrast jitter of +-20%."""
    n = len(batch)
    angle = np.deg2rad(rng.uniform(-30.0, 30.0, n))
    scale = np.exp(rng.uniform(np.log(0.8), np.log(1.25), n))
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    shift = rng.uniform(-0.1, 0.1, (n, 2))
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack(
        [
            np.stack([cos * flip, -sin, shift[:, 0]], axis=1),
            np.stack([sin * flip, cos, shift[:, 1]], axis=1),
        ],
        axis=1,
    )
    grid = F.affine_grid(
        torch.from_numpy(theta).to(batch.dtype), list(batch.shape), align_corners=False
    )
    warped = F.grid_sample(batch, grid, padding_mode="zeros", align_corners=False)
    contrast = torch.from_numpy(rng.uniform(0.8, 1.2, (n, 1, 1, 1))).to(batch.dtype)
    brightness = torch.from_numpy(rng.uniform(-0.1, 0.1, (n, 1, 1, 1))).to(batch.dtype)
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)
    return ((warped - mean) * contrast + mean + brightness).clamp(0.0, 1.0)


def holdout_error_px(
    student: torch.nn.Module, cache: TeacherCache, idx: np.ndarray, batch_size: int = 16
) -> float:
    """Mean distance (crop px) of the 33 body landmarks to the teacher's on crops ``idx``,
    weighted by the teacher's visibility probability."""
    was_training = student.training
    student.eval()
    total = weight = 0.0
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            s = pose_outputs(student(cache.crops.tensor(part))).landmarks
            t = cache.get(part).landmarks
            vis = torch.sigmoid(t[:, :NUM_BODY_LANDMARKS, 3])
            dist = (s[:, :NUM_BODY_LANDMARKS, :2] - t[:, :NUM_BODY_LANDMARKS, :2]).norm(dim=-1)
            total += float((dist * vis).sum())
            weight += float(vis.sum())
    student.train(was_training)
    return total / max(weight, 1e-9)


def holdout_split(n: int, cfg: RecoveryConfig) -> tuple[int, np.ndarray]:
    """(number of training crops, held-out crop indices): the last ``guard_crops`` crops, at
    most a quarter of the set (crops come grouped by source person, so the tail is mostly other
    people than the training crops)."""
    held = min(cfg.guard_crops, n // 4)
    return n - held, np.arange(n - held, n)


class FeatureTaps:
    """Block outputs both teacher and student compute with the same shape (feature targets)."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, cfg: RecoveryConfig):
        names = block_outputs(teacher) if cfg.feature_weight else ()
        self.names = tuple(n for n in names if n in set(block_outputs(student)))
        self.student, self.teacher = student, teacher
        if cfg.feature_weight and not self.names:
            logger.warning("feature_weight set but the models share no block outputs: ignored")

    def loss(
        self, student_feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        same = {
            n: t for n, t in teacher_feats.items() if student_feats[n].shape == t.shape
        }
        return feature_loss(student_feats, same)
