"""Knowledge distillation: the ``distill`` method and the reusable training loop ``train_distill``.

``train_distill(student, teacher, crops, cfg, progress, should_stop, checkpoint_dir)`` is what
pruning, low-rank and quantization-aware fine-tuning use for recovery:

* ``student`` is trained in place (pass a copy if the caller must keep the original); it may hold
  fake-quant modules, only ``forward`` and ``parameters()`` are used. Parameters with
  ``requires_grad=False`` stay frozen.
* ``teacher`` is run under ``no_grad`` in eval mode.
* both return the landmark model's outputs: ``(landmarks (N, 195), presence (N, 1), [heatmap])``
  with landmarks = 39 x (x, y, z, visibility logit, presence logit) in crop pixels.
* with ``online_augment`` (label-free runs), every batch gets a fresh random affine and colour
  jitter (:func:`random_augment`) and the teacher is run on the augmented crops; otherwise the
  teacher's outputs per fixed crop are cached.
* loss = smooth-L1 on the 33 body (x, y) weighted by the teacher's visibility probability
  + ``aux_weight`` x the 6 auxiliary points + ``z_weight`` x z + BCE on the visibility/presence
  logits + BCE on the presence output + ``heatmap_weight`` x the heatmap output's per-channel
  normalised MSE + ``feature_weight`` x the block outputs' (GraphModels:
  :mod:`~pose_core.compression.features`) + ``gt_weight`` x smooth-L1 to the crop labels where
  they exist.
* the last ``guard_crops`` crops (at most a quarter of the set) are held out of training; their
  landmark error against the teacher (:func:`holdout_error_px`) is scored before training, every
  ``eval_every`` steps and at the end, and the best-scoring weights are what the student ends
  with (held-out early stopping; the starting weights when training never helped).
* the learning rate follows a cosine decay over ``max(step / steps, elapsed / time_budget_s)``;
  training stops at ``steps``, at the time budget, or when ``should_stop()`` is true.
* every ``checkpoint_every`` steps the student, optimizer, step and elapsed time are written to
  ``checkpoint_dir/distill.pt`` (atomic). A later call with the same student architecture and config
  resumes from it (batches are drawn from ``(seed, step)``, so the resumed run sees what the
  uninterrupted one would have). The checkpoint is deleted when training completes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pose_core.compression.base import CompressionError, CompressionResult
from pose_core.compression.configs import DistillConfig, RecoveryConfig
from pose_core.compression.data import NUM_BODY_LANDMARKS, CompressionData, CropSet
from pose_core.compression.features import (
    block_outputs,
    feature_loss,
    feature_taps,
    normalised_mse,
)
from pose_core.compression.registry import register

logger = logging.getLogger(__name__)

NUM_LANDMARKS = 39
CHECKPOINT_NAME = "distill.pt"


@dataclass
class DistillStats:
    steps_done: int
    resumed_from_step: int
    first_loss: float
    last_loss: float
    elapsed_s: float
    stopped_by: str  # "steps" | "time_budget" | "cancelled", "+restored" if the guard undid it
    #: held-out landmark error (crop px) before training and of the weights kept, and their step
    holdout_px_start: float | None = None
    holdout_px_best: float | None = None
    best_step: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _arch_signature(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [
        (name, list(p.shape))
        for name, p in model.state_dict().items()
        if isinstance(p, torch.Tensor)
    ]


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


class _TeacherCache:
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


def _lr_at(cfg: RecoveryConfig, step: int, elapsed: float) -> float:
    """Linear warm-up over ``warmup_steps`` (Adam's first steps are the most disruptive), then
    cosine decay over the larger of the step and time fractions."""
    frac = step / max(cfg.steps, 1)
    if cfg.time_budget_s:
        frac = max(frac, elapsed / cfg.time_budget_s)
    warmup = min((step + 1) / cfg.warmup_steps, 1.0) if cfg.warmup_steps else 1.0
    return cfg.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def holdout_error_px(
    student: torch.nn.Module, cache: _TeacherCache, idx: np.ndarray, batch_size: int = 16
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


class _Taps:
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


def train_distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    crops: CropSet,
    cfg: RecoveryConfig,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | None = None,
) -> DistillStats:
    """Train ``student`` (in place) to mimic ``teacher`` on ``crops``; see the module docstring."""
    if len(crops) == 0:
        raise CompressionError("distillation needs at least one training crop")
    teacher.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    fingerprint = json.dumps(
        {"arch": _arch_signature(student), "cfg": cfg.model_dump(), "n": len(crops)}
    )
    step, elapsed_before = 0, 0.0
    best: dict[str, Any] | None = None  # held-out score, step and weights of the best so far
    if ckpt_path is not None and ckpt_path.exists():
        saved = torch.load(ckpt_path, weights_only=True)
        if saved.get("fingerprint") == fingerprint:
            student.load_state_dict(saved["student"])
            optimizer.load_state_dict(saved["optimizer"])
            step, elapsed_before = int(saved["step"]), float(saved["elapsed_s"])
            best = saved.get("best")
            logger.info("resuming distillation from step %d", step)
        else:
            logger.warning("ignoring checkpoint %s: different student or config", ckpt_path)
    resumed_from = step
    cache = _TeacherCache(teacher, crops)
    targets = torch.from_numpy(crops.targets) if crops.targets is not None else None
    augment_online = cfg.online_augment and not (cfg.gt_weight and targets is not None)
    num_train, holdout_idx = holdout_split(len(crops), cfg)
    taps = _Taps(student, teacher, cfg)

    def score(at_step: int) -> None:
        nonlocal best
        if not len(holdout_idx):
            return
        error = holdout_error_px(student, cache, holdout_idx)
        if best is None or error < best["px"]:
            start_px = error if best is None else best["start_px"]
            state = {k: v.detach().clone() for k, v in student.state_dict().items()}
            best = {"px": error, "step": at_step, "state": state, "start_px": start_px}

    if step == 0:
        score(0)
    start = time.monotonic()
    first_loss = last_loss = float("nan")
    stopped_by = "steps"
    student.train()
    while step < cfg.steps:
        elapsed = elapsed_before + time.monotonic() - start
        if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
            stopped_by = "time_budget"
            break
        if should_stop is not None and should_stop():
            stopped_by = "cancelled"
            break
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.choice(num_train, size=min(cfg.batch_size, num_train), replace=False)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(cfg, step, elapsed)
        with feature_taps(teacher, taps.names) as teacher_feats:
            if augment_online:
                batch = random_augment(crops.tensor(idx), rng)
                with torch.no_grad():
                    teacher_out = pose_outputs(teacher(batch))
            else:
                batch = crops.tensor(idx)
                teacher_out = cache.get(idx)
                if taps.names:
                    with torch.no_grad():
                        teacher(batch)
        with feature_taps(student, taps.names) as student_feats:
            student_out = pose_outputs(student(batch))
        loss = distill_loss(
            student_out, teacher_out, cfg, None if targets is None else targets[idx]
        )
        if taps.names:
            loss = loss + cfg.feature_weight * taps.loss(student_feats, teacher_feats)
        if not torch.isfinite(loss):
            raise CompressionError(f"distillation diverged at step {step} (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        last_loss = float(loss.item())
        if step == resumed_from + 1:
            first_loss = last_loss
        if step % cfg.eval_every == 0:
            score(step)
        # saved before the step is reported: a progress message never names a step that a
        # resumed job would have to redo
        if ckpt_path is not None and step % cfg.checkpoint_every == 0:
            _save_checkpoint(
                ckpt_path,
                {
                    "fingerprint": fingerprint,
                    "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "elapsed_s": elapsed_before + time.monotonic() - start,
                    "best": best,
                },
            )
        if progress is not None:
            budget_frac = elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0
            progress(
                min(max(step / max(cfg.steps, 1), budget_frac), 1.0),
                f"distill step {step} loss {last_loss:.3f}",
            )
    student.eval()
    if best is not None and stopped_by != "cancelled":
        if step % cfg.eval_every:
            score(step)
        if best["step"] != step:
            logger.info(
                "keeping the weights of step %d (held-out %.2f px, start %.2f px)",
                best["step"],
                best["px"],
                best["start_px"],
            )
            student.load_state_dict(best["state"])
            if best["step"] == 0:
                stopped_by += "+restored"
    if ckpt_path is not None and stopped_by != "cancelled" and ckpt_path.exists():
        ckpt_path.unlink()
    stats = DistillStats(
        step,
        resumed_from,
        first_loss,
        last_loss,
        elapsed_before + time.monotonic() - start,
        stopped_by,
        None if best is None else float(best["start_px"]),
        None if best is None else float(best["px"]),
        None if best is None else int(best["step"]),
    )
    logger.info("distillation done: %s", stats)
    return stats


def recover(
    student: torch.nn.Module, teacher: torch.nn.Module, cfg: RecoveryConfig, data: CompressionData
) -> dict[str, Any]:
    """Recovery training of prune / lowrank: distil ``teacher`` into ``student`` on ``data``."""
    stats = train_distill(
        student,
        teacher,
        data.train,
        cfg,
        progress=data.progress,
        should_stop=data.should_stop,
        checkpoint_dir=data.work_dir / "recovery",
    )
    if stats.stopped_by == "cancelled":
        raise CompressionError("compression cancelled during recovery (checkpoint kept for resume)")
    return stats.as_dict()


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with gradients off (a teacher that the student cannot touch)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@register(DistillConfig)
def distill(model: Any, config: DistillConfig, data: CompressionData) -> CompressionResult:
    """Fine-tune a copy of ``model`` against ``data.teacher`` (default: the input model itself)."""
    if not isinstance(model, torch.nn.Module):
        raise CompressionError("distill needs a torch model (run it before INT8 export)")
    teacher = frozen_copy(data.teacher if data.teacher is not None else model)
    student = copy.deepcopy(model)
    for p in student.parameters():
        p.requires_grad_(True)
    stats = recover(student, teacher, config, data)
    return CompressionResult(
        student, {"method": "distill", "config": config.model_dump(), "distill": stats}
    )
