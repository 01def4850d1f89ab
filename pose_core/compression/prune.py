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
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from pose_core.compression.base import CompressionError, CompressionResult
from pose_core.compression.configs import PruneConfig
from pose_core.compression.data import CompressionData, CropSet
from pose_core.compression.distill import frozen_copy, pose_outputs, recover
from pose_core.compression.measure import count_macs_params, example_input
from pose_core.compression.refit import refit_pointwise
from pose_core.compression.registry import register
from pose_core.compression.target_search import needs_search
from pose_core.models.layers import ChannelPad

logger = logging.getLogger(__name__)


class _IndexShift:
    """torch-pruning index mapping between a ChannelPad's input and output channel numbers."""

    def __init__(self, pad: ChannelPad, to_output: bool) -> None:
        self.pad, self.to_output = pad, to_output

    def __call__(self, idxs: list[Any]) -> list[Any]:
        before, channels = self.pad.before, _pad_in_channels(self.pad)
        hybrid = type(idxs[0]) if idxs else None
        if self.to_output:
            return [hybrid(idx=i.idx + before, root_idx=i.root_idx) for i in idxs]  # type: ignore[misc]
        return [
            hybrid(idx=i.idx - before, root_idx=i.root_idx)  # type: ignore[misc]
            for i in idxs
            if before <= i.idx < before + channels
        ]


_IN_CHANNELS_ATTR = "_pruning_in_channels"


def _pad_in_channels(pad: ChannelPad) -> int:
    return int(getattr(pad, _IN_CHANNELS_ATTR))


class ChannelPadPruner(tp.pruner.BasePruningFunc):
    """Prunes a ChannelPad by OUTPUT channel number (input and output channels are coupled).

    Output channels in ``[before, before + C)`` copy input channel ``k - before``; the others are
    zeros, and removing them shrinks ``before`` / ``after``.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        assert isinstance(layer, ChannelPad)
        before, channels = layer.before, _pad_in_channels(layer)
        removed = set(int(i) for i in idxs)
        layer.before = before - sum(1 for i in removed if i < before)
        layer.after = layer.after - sum(1 for i in removed if i >= before + channels)
        setattr(
            layer,
            _IN_CHANNELS_ATTR,
            channels - sum(1 for i in removed if before <= i < before + channels),
        )
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        assert isinstance(layer, ChannelPad)
        return layer.before + _pad_in_channels(layer) + layer.after

    #: indices reaching this pruner are always output numbers (see _IndexShift), so both counts
    #: are the output count (torch-pruning checks in- and out-counts of a coupled layer alike)
    get_in_channels = get_out_channels


def _record_pad_channels(model: nn.Module, example: torch.Tensor) -> list[ChannelPad]:
    pads = [m for m in model.modules() if isinstance(m, ChannelPad)]
    hooks = [
        p.register_forward_hook(
            lambda mod, inp, out: setattr(mod, _IN_CHANNELS_ATTR, inp[0].shape[1])
        )
        for p in pads
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return pads


def _install_pad_mappings(graph: tp.DependencyGraph, pads: list[ChannelPad]) -> None:
    for pad in pads:
        node = graph.module2node.get(pad)
        if node is None:
            continue
        for dep in node.dependencies:  # pad -> its producers: output numbers -> input numbers
            if dep.target in node.inputs:
                dep.index_mapping[0] = _IndexShift(pad, to_output=False)
        for producer in node.inputs:  # producer -> pad: input numbers -> output numbers
            for dep in producer.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = _IndexShift(pad, to_output=True)


def _dependency_graph(
    model: nn.Module, example: torch.Tensor, pruner: ChannelPadPruner
) -> tp.DependencyGraph:
    """The model's channel dependencies, for deciding what is never pruned (one trace)."""
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=example, customized_pruners={ChannelPad: pruner}
    )


def _output_heads(model: nn.Module, graph: tp.DependencyGraph) -> list[nn.Module]:
    """Prunable layers whose output channels reach a model output (never pruned)."""
    heads: list[nn.Module] = []
    for module in model.modules():
        if not isinstance(module, nn.Conv2d | nn.Linear) or module not in graph.module2node:
            continue
        group = graph.get_pruning_group(
            module,
            tp.prune_conv_out_channels
            if isinstance(module, nn.Conv2d)
            else tp.prune_linear_out_channels,
            [0],
        )
        if any(isinstance(dep.target.module, tp.ops._OutputOp) for dep, _ in group):
            heads.append(module)
    return heads


def _coupled_layers(model: nn.Module, graph: tp.DependencyGraph) -> list[nn.Module]:
    """Dense convs whose output channels are tied to another dense conv's (through an add).

    Pruning such a group removes channels of the residual stream shared by several blocks;
    a group with a single dense conv's outputs (plus depthwise convs) is private to one block.
    """
    coupled: list[nn.Module] = []
    for module in model.modules():
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            continue
        if module not in graph.module2node:
            continue
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels, [0])
        producers = {
            id(dep.target.module)
            for dep, _ in group
            if getattr(dep.handler, "__name__", "") == "prune_out_channels"
            and isinstance(dep.target.module, nn.Conv2d)
            and dep.target.module.groups == 1
        }
        if len(producers) > 1:
            coupled.append(module)
    return coupled


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


def prune_channels(model: nn.Module, cfg: PruneConfig, crops: CropSet) -> dict[str, Any]:
    """Prune ``model`` IN PLACE as ``cfg`` says; returns what was done (no recovery here)."""
    example = example_input(crops)
    model.eval()
    pads = _record_pad_channels(model, example)
    pad_pruner = ChannelPadPruner()
    graph = _dependency_graph(model, example, pad_pruner)
    heads = _output_heads(model, graph)
    ignored = list(heads) + [
        m
        for name, m in model.named_modules()
        if name and any(name.startswith(p) for p in cfg.ignored_layers)
    ]
    if cfg.scope == "block_internal":
        ignored += _coupled_layers(model, graph)
    importance: Callable[..., Any] = (
        tp.importance.GroupTaylorImportance()
        if cfg.importance == "taylor"
        else tp.importance.GroupMagnitudeImportance(p=2)
    )
    macs0, params0 = count_macs_params(model, example)
    iterative = cfg.target_macs_ratio is not None
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        global_pruning=cfg.global_pruning,
        pruning_ratio=0.9 if iterative else float(cfg.ratio or 0.0),
        iterative_steps=45 if iterative else 1,
        ignored_layers=ignored,
        round_to=cfg.round_to,
        customized_pruners={ChannelPad: pad_pruner},
    )
    _install_pad_mappings(pruner.DG, pads)
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
        if hasattr(pad, _IN_CHANNELS_ATTR):
            delattr(pad, _IN_CHANNELS_ATTR)
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
    """Prune a copy of ``model`` and recover it by distillation from ``model`` itself."""
    if not isinstance(model, nn.Module):
        raise CompressionError("pruning needs a torch model")
    if needs_search(config):
        raise CompressionError("prune needs a target here; run_recipe searches one within budget")
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
