"""Knowledge distillation: the ``distill`` method and the reusable training loop ``train_distill``.

``train_distill(student, teacher, crops, cfg, progress, should_stop, checkpoint_dir)`` is what
pruning, low-rank and quantization-aware fine-tuning use for recovery:

* ``student`` is trained in place (pass a copy if the caller must keep the original); it may hold
  fake-quant modules, only ``forward`` and ``parameters()`` are used. Parameters with
  ``requires_grad=False`` stay frozen.
* ``teacher`` is run under ``no_grad`` in eval mode.
* both return the landmark model's outputs: ``(landmarks (N, 195), presence (N, 1), [heatmap])``
  with landmarks = 39 x (x, y, z, visibility logit, presence logit) in crop pixels -- or, with
  ``objective`` ``RAW_OUTPUTS`` (a heatmap / SimCC model), any outputs, matched by their
  per-channel normalised MSE (the landmark weights below do not apply).
* with ``online_augment`` (label-free runs), every batch gets a fresh random affine and colour
  jitter (:func:`~pose_core.compression.distill_loss.random_augment`) and the teacher is run
  on the augmented crops; otherwise the teacher's outputs per fixed crop are cached.
* loss = smooth-L1 on the 33 body (x, y) weighted by the teacher's visibility probability
  + ``aux_weight`` x the 6 auxiliary points + ``z_weight`` x z + BCE on the visibility/presence
  logits + BCE on the presence output + ``heatmap_weight`` x the heatmap output's per-channel
  normalised MSE + ``feature_weight`` x the block outputs' (GraphModels:
  :mod:`~pose_core.compression.features`) + ``gt_weight`` x smooth-L1 to the crop labels where
  they exist.
* the last ``guard_crops`` crops (at most a quarter of the set) are held out of training; their
  landmark error against the teacher (:func:`~pose_core.compression.distill_loss.holdout_error_px`)
  is scored before training, every ``eval_every`` steps and at the end, and the best-scoring
  weights are what the student ends with (held-out early stopping; the starting weights when
  training never helped).
* the learning rate follows a cosine decay over ``max(step / steps, elapsed / time_budget_s)``;
  training stops at ``steps``, at the time budget, after ``patience`` held-out scores without a
  new best, or when ``should_stop()`` is true.
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
from typing import Any, Protocol

import numpy as np
import torch

from pose_core.compression.base import CompressionError, CompressionResult
from pose_core.compression.configs import DistillConfig, RecoveryConfig
from pose_core.compression.data import CompressionData, CropSet
from pose_core.compression.distill_loss import (
    LANDMARKS,
    DistillObjective,
    FeatureTaps,
    TeacherCache,
    holdout_error_px,
    holdout_split,
    objective_for,
    random_augment,
)
from pose_core.compression.features import (
    feature_taps,
)
from pose_core.compression.registry import register

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "distill.pt"


class HeldOutScorer(Protocol):
    """Scores a student on the held-out crops ``idx`` (lower is better), named ``metric``."""

    metric: str

    def __call__(self, student: torch.nn.Module, idx: np.ndarray) -> float: ...


@dataclass
class DistillStats:
    steps_done: int
    resumed_from_step: int
    first_loss: float
    last_loss: float
    elapsed_s: float
    #: "steps" | "time_budget" | "no_improvement" | "cancelled", "+restored" if the guard undid it
    stopped_by: str
    #: held-out landmark error (crop px) before training and of the weights kept, and their step
    holdout_px_start: float | None = None
    holdout_px_best: float | None = None
    best_step: int | None = None
    #: what the two ``holdout_px`` scores measure (``landmark_px``, or ``output_nmse`` for a
    #: model without BlazePose outputs: :mod:`~pose_core.compression.distill_loss`)
    holdout_metric: str = LANDMARKS.metric

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _lr_at(cfg: RecoveryConfig, step: int, elapsed: float) -> float:
    """Linear warm-up over ``warmup_steps`` (Adam's first steps are the most disruptive), then
    cosine decay over the larger of the step and time fractions."""
    frac = step / max(cfg.steps, 1)
    if cfg.time_budget_s:
        frac = max(frac, elapsed / cfg.time_budget_s)
    warmup = min((step + 1) / cfg.warmup_steps, 1.0) if cfg.warmup_steps else 1.0
    return cfg.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def train_distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    crops: CropSet,
    cfg: RecoveryConfig,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | None = None,
    objective: DistillObjective = LANDMARKS,
    scorer: HeldOutScorer | None = None,
) -> DistillStats:
    """Train ``student`` (in place) to mimic ``teacher`` on ``crops``; see the module docstring
    (``objective``: the landmark losses, or another model's, e.g. ``RAW_OUTPUTS``; ``scorer``:
    what scores the held-out crops instead of the student's own error, e.g. the model ONNX
    Runtime will run)."""
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
    cache = TeacherCache(teacher, crops, objective)
    targets = torch.from_numpy(crops.targets) if crops.targets is not None else None
    augment_online = cfg.online_augment and not (cfg.gt_weight and targets is not None)
    num_train, holdout_idx = holdout_split(len(crops), cfg)
    taps = FeatureTaps(student, teacher, cfg)

    def score(at_step: int) -> None:
        nonlocal best
        if not len(holdout_idx):
            return
        if scorer is None:
            error = holdout_error_px(student, cache, holdout_idx)
        else:
            error = scorer(student, holdout_idx)
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
                batch = random_augment(crops.tensor(idx), rng, objective.input_range)
                with torch.no_grad():
                    teacher_out = objective.read(teacher(batch))
            else:
                batch = crops.tensor(idx)
                teacher_out = cache.get(idx)
                if taps.names:
                    with torch.no_grad():
                        teacher(batch)
        with feature_taps(student, taps.names) as student_feats:
            student_out = objective.read(student(batch))
        loss = objective.loss(
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
            stale = best is not None and step - best["step"] >= cfg.patience * cfg.eval_every
            if cfg.patience and stale:
                stopped_by = "no_improvement"
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
        if stopped_by == "no_improvement":
            break
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
        objective.metric if scorer is None else scorer.metric,
    )
    logger.info("distillation done: %s", stats)
    return stats


def recover(
    student: torch.nn.Module, teacher: torch.nn.Module, cfg: RecoveryConfig, data: CompressionData
) -> dict[str, Any]:
    """Recovery training of prune / lowrank: distil ``teacher`` into ``student`` on ``data``
    (the objective of ``data.pose``)."""
    stats = train_distill(student, teacher, data.train, cfg, progress=data.progress,
                          should_stop=data.should_stop,
                          checkpoint_dir=data.work_dir / "recovery",
                          objective=objective_for(data.pose))  # fmt: skip
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
    """Fine-tune a copy of ``model`` (a torch model: :func:`~pose_core.compression.registry.
    compress` checks) against ``data.teacher`` (default: the input model itself)."""
    teacher = frozen_copy(data.teacher if data.teacher is not None else model)
    student = copy.deepcopy(model)
    for p in student.parameters():
        p.requires_grad_(True)
    stats = recover(student, teacher, config, data)
    return CompressionResult(
        student, {"method": "distill", "config": config.model_dump(), "distill": stats}
    )
