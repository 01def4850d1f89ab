"""torch-pruning plumbing of :mod:`~pose_core.compression.prune`: the dependency graph of a
model with zero-padding residual shortcuts (:class:`~pose_core.models.layers.ChannelPad`, pruned by
:class:`ChannelPadPruner` through index mappings), its output heads (never pruned) and the
layers residual adds couple across blocks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

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


IN_CHANNELS_ATTR = "_pruning_in_channels"


def _pad_in_channels(pad: ChannelPad) -> int:
    return int(getattr(pad, IN_CHANNELS_ATTR))


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
            IN_CHANNELS_ATTR,
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


def record_pad_channels(model: nn.Module, example: torch.Tensor) -> list[ChannelPad]:
    pads = [m for m in model.modules() if isinstance(m, ChannelPad)]
    hooks = [
        p.register_forward_hook(
            lambda mod, inp, out: setattr(mod, IN_CHANNELS_ATTR, inp[0].shape[1])
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


def install_pad_mappings(graph: tp.DependencyGraph, pads: list[ChannelPad]) -> None:
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


def dependency_graph(
    model: nn.Module, example: torch.Tensor, pruner: ChannelPadPruner
) -> tp.DependencyGraph:
    """The model's channel dependencies, for deciding what is never pruned (one trace)."""
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=example, customized_pruners={ChannelPad: pruner}
    )


def output_heads(model: nn.Module, graph: tp.DependencyGraph) -> list[nn.Module]:
    """Prunable layers whose output channels reach a model output (never pruned): through
    later ops (torch-pruning's output node), or directly, as a last conv giving the heatmaps
    does (a layer whose outputs nothing consumes: the graph is traced back from the outputs);
    and layers whose channels an ``nn.Linear`` reads (its input features): the linears of a
    pose head read keypoint maps flattened over their pixels (SimCC), which no channel
    index maps onto."""
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
        if any(
            isinstance(dep.target.module, tp.ops._OutputOp)
            or (_prunes_out_channels(dep) and not dep.target.outputs)
            or (isinstance(module, nn.Conv2d) and _linear_input(dep))
            for dep, _ in group
        ):
            heads.append(module)
    return heads


def _prunes_out_channels(dep: Any) -> bool:
    return getattr(dep.handler, "__name__", "") == "prune_out_channels"


def _linear_input(dep: Any) -> bool:
    handler = getattr(dep.handler, "__name__", "")
    return isinstance(dep.target.module, nn.Linear) and handler == "prune_in_channels"


def coupled_layers(model: nn.Module, graph: tp.DependencyGraph) -> list[nn.Module]:
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
