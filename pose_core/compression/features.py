"""Dense feature targets for recovery: block outputs of a GraphModel, teacher vs student.

A few hundred crops give few landmark numbers (195 per crop) but H x W x C targets per block,
so matching the teacher's block outputs is well posed where landmark distillation memorises
(FSKD, Li et al. 2020; MiR, Wang et al. 2022). Block outputs are the residual ``add`` nodes: their
channels are never pruned (``PruneConfig.scope`` ``block_internal``) nor factorized, so teacher
and student tensors have the same shape and are compared directly.

:class:`FeatureTaps` records them during a forward pass (composing with any ``tensor_hook``
already set, e.g. QAT's fake-quant); :func:`feature_loss` is the per-channel normalised MSE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from pose_core.models.graph import GraphModel, Node

BLOCK_OUTPUT_OP = "add"


def block_outputs(model: torch.nn.Module) -> tuple[str, ...]:
    """Names of the block-output tensors of ``model`` (empty for a model that is no GraphModel)."""
    if not isinstance(model, GraphModel):
        return ()
    return tuple(node.output for node in model.nodes if node.op == BLOCK_OUTPUT_OP)


@contextmanager
def feature_taps(
    model: torch.nn.Module, names: tuple[str, ...]
) -> Iterator[dict[str, torch.Tensor]]:
    """While active, every forward pass of ``model`` stores the tensors ``names`` in the dict
    yielded (nothing for a model that is no GraphModel)."""
    captured: dict[str, torch.Tensor] = {}
    if not isinstance(model, GraphModel) or not names:
        yield captured
        return
    wanted = set(names)
    inner = model.tensor_hook

    def tap(node: Node, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor if inner is None else inner(node, tensor)
        if node.output in wanted:
            captured[node.output] = out
        return out

    model.tensor_hook = tap
    try:
        yield captured
    finally:
        model.tensor_hook = inner


def normalised_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE of (N, C, ...) tensors with each channel divided by the teacher's std over the batch
    (so that every channel, and every block, weighs alike whatever its scale)."""
    dims = [0, *range(2, teacher.dim())]
    scale = teacher.detach().std(dim=dims, keepdim=True)
    scale = scale.clamp_min(1e-2 * float(scale.mean()) + 1e-6)  # dead channels: no blow-up
    return ((student - teacher.detach()) / scale).pow(2).mean()


def feature_loss(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mean of :func:`normalised_mse` over the tensors both dicts hold (same shapes)."""
    common = [name for name in teacher if name in student]
    if not common:
        raise ValueError("no common feature tensors to compare")
    losses = [normalised_mse(student[name], teacher[name]) for name in common]
    return torch.stack(losses).mean()
