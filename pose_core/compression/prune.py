"""Structured channel pruning (torch-pruning DepGraph) followed by mandatory distillation recovery.

Channels are physically removed: the result is the same module tree with smaller convs (a
``GraphModel`` stays a ``GraphModel`` whose ``recipe()`` describes the pruned shapes). Output heads
(every layer whose output channels reach a model output) are never pruned. Residual shortcuts that
zero-pad channels (:class:`pose_core.models.layers.ChannelPad`) are handled by a custom pruner
that shrinks ``before`` / ``after`` or the copied channels, coupled through index mappings.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from pose_core.compression.base import CompressionError, CompressionResult
from pose_core.compression.configs import PruneConfig
from pose_core.compression.data import CompressionData, CropSet
from pose_core.compression.distill import frozen_copy, recover
from pose_core.compression.distill_loss import pose_outputs
from pose_core.compression.measure import count_macs_params, example_input
from pose_core.compression.prune_graph import (
    IN_CHANNELS_ATTR,
    ChannelPadPruner,
    coupled_layers,
    dependency_graph,
    install_pad_mappings,
    output_heads,
    record_pad_channels,
)
from pose_core.compression.refit import refit_pointwise
from pose_core.compression.registry import register
from pose_core.compression.target_search import needs_search
from pose_core.models.layers import ChannelPad

logger = logging.getLogger(__name__)


def _taylor_gradients(model: nn.Module, crops: CropSet, cfg: PruneConfig) -> None:
    """Accumulate gradients for Taylor importance: labels where present, else output energy."""
    model.zero_grad()
    for b in range(cfg.taylor_batches):
        idx = [(b * 8 + k) % len(crops) for k in range(min(8, len(crops)))]
        out = pose_outputs(model(crops.tensor(idx)))
        xy = out.landmarks[:, :33, :2]
        if crops.targets is not None and (crops.targets[idx][..., 2] > 0).any():
            tgt = torch.from_numpy(crops.targets[idx])
            mask = (tgt[..., 2] > 0).float().unsqueeze(-1)
            loss = ((xy - tgt[..., :2]) ** 2 * mask).sum() / mask.sum()
        else:
            loss = (xy**2).mean()
        loss.backward()
    for p in model.parameters():  # layers that do not reach the loss (e.g. the presence head)
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _silenced_error(
    model: nn.Module, group: Any, channels: torch.Tensor, images: torch.Tensor, ref: torch.Tensor
) -> float | None:
    """Landmark error (crop px, 33 body points) vs ``ref`` with ``channels`` of ``group``
    silenced: their input weights in the group's dense consumer convs zeroed, which is what
    removing them does to a block-internal group (None when the group has no such consumer)."""
    consumers = {
        id(dep.target.module): dep.target.module
        for dep, _ in group
        if getattr(dep.handler, "__name__", "") == "prune_in_channels"
        and isinstance(dep.target.module, nn.Conv2d)
        and dep.target.module.groups == 1
        and dep.target.module.in_channels > int(channels.max())
    }
    if not consumers:
        return None
    saved = {key: conv.weight.detach().clone() for key, conv in consumers.items()}
    try:
        with torch.no_grad():
            for conv in consumers.values():
                conv.weight[:, channels] = 0.0
            out = pose_outputs(model(images)).landmarks[:, :33, :2]
    finally:
        with torch.no_grad():
            for key, conv in consumers.items():
                conv.weight.copy_(saved[key])
    return float((out - ref).norm(dim=-1).mean())


def _sensitivity_ratios(
    model: nn.Module,
    pruner: Any,
    importance: Callable[..., Any],
    crops: CropSet,
    cfg: PruneConfig,
) -> dict[nn.Module, float]:
    """Per-group final pruning ratios from each group's sensitivity: the landmark error when
    its least important half is silenced alone. Ratios scale with 1 / error (square-rooted),
    the least sensitive group at ``0.9``, so the iterative schedule prunes the insensitive
    groups first and the sensitive ones least."""
    images = crops.tensor(crops.spread(cfg.sensitivity_crops))
    with torch.no_grad():
        ref = pose_outputs(model(images)).landmarks[:, :33, :2]
    errors: dict[int, tuple[list[nn.Module], float]] = {}
    for group in pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        scores = importance(group)
        if scores is None or len(scores) < 2:
            continue
        channels = torch.argsort(scores)[: len(scores) // 2]
        error = _silenced_error(model, group, channels, images, ref)
        if error is not None:
            members: list[nn.Module] = [
                dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Conv2d)
            ]
            errors[id(group[0].dep.target.module)] = (members, max(error, 1e-6))
    if not errors:
        return {}
    least = min(e for _, e in errors.values())
    ratios: dict[nn.Module, float] = {}
    for members, error in errors.values():
        for module in members:
            ratios[module] = 0.9 * (least / error) ** 0.5
    logger.info(
        "pruning sensitivity of %d groups: %.2f-%.2f px",
        len(errors),
        least,
        max(e for _, e in errors.values()),
    )
    return ratios


def prune_channels(model: nn.Module, cfg: PruneConfig, crops: CropSet) -> dict[str, Any]:
    """Prune ``model`` IN PLACE as ``cfg`` says; returns what was done (no recovery here)."""
    example = example_input(crops)
    model.eval()
    pads = record_pad_channels(model, example)
    pad_pruner = ChannelPadPruner()
    graph = dependency_graph(model, example, pad_pruner)
    heads = output_heads(model, graph)
    ignored = list(heads) + [
        m
        for name, m in model.named_modules()
        if name and any(name.startswith(p) for p in cfg.ignored_layers)
    ]
    if cfg.scope == "block_internal":
        ignored += coupled_layers(model, graph)
    importance: Callable[..., Any] = (
        tp.importance.GroupTaylorImportance()
        if cfg.importance == "taylor"
        else tp.importance.GroupMagnitudeImportance(p=2)
    )
    macs0, params0 = count_macs_params(model, example)
    iterative = cfg.target_macs_ratio is not None

    def make_pruner(ratios: dict[nn.Module, float] | None = None) -> Any:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=importance,
            global_pruning=cfg.global_pruning,
            pruning_ratio=0.9 if iterative else float(cfg.ratio or 0.0),
            pruning_ratio_dict=ratios,
            iterative_steps=45 if iterative else 1,
            ignored_layers=ignored,
            round_to=cfg.round_to,
            customized_pruners={ChannelPad: pad_pruner},
        )
        install_pad_mappings(pruner.DG, pads)
        return pruner

    pruner = make_pruner()
    if cfg.allocation == "sensitivity":
        if not iterative:
            raise CompressionError("allocation 'sensitivity' needs target_macs_ratio")
        pruner = make_pruner(_sensitivity_ratios(model, pruner, importance, crops, cfg))
    convs = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.bias is not None
    }
    original_bias = {
        name: m.bias.detach().clone() for name, m in convs.items() if m.bias is not None
    }
    kept = {name: torch.arange(m.out_channels) for name, m in convs.items()}
    steps = 0
    for _ in range(pruner.iterative_steps):
        if cfg.importance == "taylor":
            model.train()
            _taylor_gradients(model, crops, cfg)
        with torch.no_grad():  # biases carry the original channel numbers through the pruning
            for name, conv in convs.items():
                conv.bias.data = kept[name].to(conv.bias.dtype)  # type: ignore[union-attr]
            pruner.step()
            for name, conv in convs.items():
                kept[name] = conv.bias.data.round().long()  # type: ignore[union-attr]
                conv.bias.data = original_bias[name][kept[name]]  # type: ignore[union-attr]
        model.zero_grad(set_to_none=True)
        steps += 1
        macs, _ = count_macs_params(model, example)
        if not iterative or macs <= float(cfg.target_macs_ratio or 0) * macs0:
            break
    model.eval()
    if iterative and macs > float(cfg.target_macs_ratio or 0) * macs0 * 1.01:
        raise CompressionError(
            f"pruning reached only {macs / macs0:.2f}x MACs, not {cfg.target_macs_ratio}x, with "
            f"scope {cfg.scope!r}" + ("; scope 'all' can prune more" if cfg.scope != "all" else "")
        )
    for pad in pads:
        if hasattr(pad, IN_CHANNELS_ATTR):
            delattr(pad, IN_CHANNELS_ATTR)
    macs1, params1 = count_macs_params(model, example)
    return {
        "macs_before": macs0,
        "macs_after": macs1,
        "params_before": params0,
        "params_after": params1,
        "pruning_steps": steps,
        "heads_kept": len(heads),
        "kept_channels": {name: idx.tolist() for name, idx in kept.items()},
    }


@register(PruneConfig)
def prune(model: Any, config: PruneConfig, data: CompressionData) -> CompressionResult:
    """Prune a copy of ``model`` (a torch model: :func:`~pose_core.compression.registry.compress`
    checks) and recover it by distillation from ``model`` itself."""
    if needs_search(config):
        raise CompressionError("prune needs a target here; run_recipe searches one within budget")
    if not data.pose.landmark_outputs and config.landmark_only():
        raise CompressionError(
            f"{', '.join(config.landmark_only())} read BlazePose landmarks; a "
            f"{data.pose.kind} model is pruned by magnitude with a uniform allocation"
        )
    teacher = frozen_copy(data.teacher if data.teacher is not None else model)
    student = copy.deepcopy(model)
    try:
        pruning = prune_channels(student, config, data.train)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise CompressionError(f"pruning failed: {exc}") from exc
    kept = pruning.pop("kept_channels")
    if config.refit:
        pruning["refit"] = refit_pointwise(
            student,
            frozen_copy(model),
            data.train,
            {name: (name, torch.tensor(idx)) for name, idx in kept.items()},
            num_crops=config.refit_crops,
        )
    macs_ratio = pruning["macs_after"] / max(pruning["macs_before"], 1)
    data.progress(0.02, f"pruned: {macs_ratio:.2f}x MACs")
    for p in student.parameters():
        p.requires_grad_(True)
    stats = recover(student, teacher, config.recovery, data.for_step("prune", 0.02, 1.0))
    return CompressionResult(
        student,
        {
            "method": "prune",
            "config": config.model_dump(mode="json"),
            "pruning": pruning,
            "recovery": stats,
        },
    )
