"""What distillation minimises and scores: the landmark model's outputs (:class:`PoseOutputs`), the
distillation loss (see :mod:`~pose_core.compression.distill` for its terms), the teacher's
cached outputs, the per-batch random augmentation, and the held-out landmark error that
early stopping scores.

A model whose outputs are not BlazePose's (a heatmap or SimCC upload) is distilled on its raw
outputs instead (:data:`RAW_OUTPUTS`): the mean over its outputs of the per-channel normalised
MSE (each keypoint's heatmap or SimCC bins weigh alike), scored the same way on the held-out
crops; :func:`objective_for` picks the objective of a model's
:class:`~pose_core.compression.pose_format.PoseFormat`."""

from __future__ import annotations

import logging
from collections.abc import Callable
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
from pose_core.compression.pose_format import PoseFormat

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
    """Teacher outputs per crop index, computed on first use (the crops never change), read
    by ``objective``."""

    def __init__(
        self, teacher: torch.nn.Module, crops: CropSet, objective: DistillObjective | None = None
    ) -> None:
        self.teacher, self.crops = teacher, crops
        self.objective = objective or LANDMARKS
        self.outputs: dict[int, tuple[torch.Tensor, ...]] = {}

    def get(self, idx: np.ndarray) -> Any:
        missing = [int(i) for i in idx if int(i) not in self.outputs]
        if missing:
            with torch.no_grad():
                out = output_tensors(self.teacher(self.crops.tensor(missing)))
            for row, i in enumerate(missing):
                self.outputs[i] = tuple(t[row] for t in out)
        rows = [self.outputs[int(i)] for i in idx]
        return self.objective.read(tuple(torch.stack(ts) for ts in zip(*rows, strict=True)))


def random_augment(
    batch: torch.Tensor,
    rng: np.random.Generator,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Each crop of an (N, 3, H, W) batch in ``value_range`` ([0, 1]; ``None``: normalised
    crops, not clipped) under its own random affine (rotation +-30 deg, scale 0.8-1.25, shift
    +-10%, horizontal flip; zero padding, as crops that leave the image are) and brightness /
    contrast jitter of +-20%."""
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
    jittered = (warped - mean) * contrast + mean + brightness
    return jittered if value_range is None else jittered.clamp(*value_range)


def holdout_error_px(
    student: torch.nn.Module, cache: TeacherCache, idx: np.ndarray, batch_size: int = 16
) -> float:
    """The held-out score of ``student`` against the teacher on crops ``idx`` (lower is
    better): with BlazePose outputs, the mean distance (crop px) of the 33 body landmarks
    weighted by the teacher's visibility probability; else ``cache.objective``'s."""
    was_training = student.training
    student.eval()
    objective = cache.objective
    total = weight = 0.0
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            batch_total, batch_weight = objective.score(
                objective.read(student(cache.crops.tensor(part))), cache.get(part)
            )
            total += batch_total
            weight += batch_weight
    student.train(was_training)
    return total / max(weight, 1e-9)


def _landmark_score(student: PoseOutputs, teacher: PoseOutputs) -> tuple[float, float]:
    s, t = student.landmarks, teacher.landmarks
    vis = torch.sigmoid(t[:, :NUM_BODY_LANDMARKS, 3])
    dist = (s[:, :NUM_BODY_LANDMARKS, :2] - t[:, :NUM_BODY_LANDMARKS, :2]).norm(dim=-1)
    return float((dist * vis).sum()), float(vis.sum())


def output_tensors(raw: Any) -> tuple[torch.Tensor, ...]:
    """A model's outputs as a tuple (one tensor or a list / tuple of them)."""
    return tuple(raw) if isinstance(raw, list | tuple) else (raw,)


def output_loss(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    cfg: RecoveryConfig | None = None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the outputs of the per-channel normalised MSE (``cfg`` and ``targets`` are
    not used: the landmark terms and labels are BlazePose's)."""
    if len(student) != len(teacher):
        raise CompressionError(f"{len(student)} student outputs for {len(teacher)} teacher ones")
    pairs = zip(student, teacher, strict=True)
    return torch.stack([normalised_mse(s, t) for s, t in pairs]).mean()


def _output_score(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]
) -> tuple[float, float]:
    n = len(teacher[0])
    return float(output_loss(student, teacher)) * n, float(n)


@dataclass(frozen=True)
class DistillObjective:
    """What distillation reads from a model's raw outputs, minimises and scores."""

    metric: str  #: the held-out score's name (``DistillStats.holdout_metric``)
    read: Callable[[Any], Any]
    loss: Callable[[Any, Any, RecoveryConfig, torch.Tensor | None], torch.Tensor]
    score: Callable[[Any, Any], tuple[float, float]]  #: (sum, weight) over one batch
    input_range: tuple[float, float] | None  #: the crops' values (``random_augment``)


LANDMARKS = DistillObjective("landmark_px", pose_outputs, distill_loss, _landmark_score, (0.0, 1.0))
"""BlazePose: the landmark losses, scored in crop pixels."""
RAW_OUTPUTS = DistillObjective("output_nmse", output_tensors, output_loss, _output_score, None)
"""Any other model: normalised MSE of every output (heatmaps, SimCC bins)."""


def objective_for(pose: PoseFormat) -> DistillObjective:
    return LANDMARKS if pose.landmark_outputs else RAW_OUTPUTS


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
