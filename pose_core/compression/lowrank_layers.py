"""The factorised layers of :mod:`~pose_core.compression.lowrank`: a 1 x 1 conv or linear layer
split into two of rank ``rank`` (SVD, or the given output basis), a k x k conv into three
(Tucker-2: 1 x 1 reduce, k x k core, 1 x 1 expand)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pose_core.compression.base import CompressionError


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        raise CompressionError(f"cannot factorize a conv with padding={value!r}")
    return (int(value[0]), int(value[1]))


def svd_layers(
    module: nn.Conv2d | nn.Linear, rank: int, out_basis: torch.Tensor | None = None
) -> nn.Sequential:
    w = module.weight.detach()
    flat = w.reshape(w.shape[0], -1)
    if out_basis is None:
        u, s, vh = torch.linalg.svd(flat, full_matrices=False)
        root = s[:rank].sqrt()
        first_w, second_w = root[:, None] * vh[:rank], u[:, :rank] * root[None, :]
    else:  # project the outputs onto the data's strongest directions
        first_w, second_w = out_basis[:, :rank].T @ flat, out_basis[:, :rank]
    first: nn.Linear | nn.Conv2d
    second: nn.Linear | nn.Conv2d
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, rank, bias=False)
        second = nn.Linear(rank, module.out_features, bias=module.bias is not None)
    else:
        first = nn.Conv2d(
            module.in_channels,
            rank,
            1,
            stride=_pair(module.stride),
            padding=_pair(module.padding),
            bias=False,
        )
        second = nn.Conv2d(rank, module.out_channels, 1, bias=module.bias is not None)
    first.weight.data.copy_(first_w.reshape(first.weight.shape))
    second.weight.data.copy_(second_w.reshape(second.weight.shape))
    if module.bias is not None and second.bias is not None:
        second.bias.data.copy_(module.bias.detach())
    return nn.Sequential(first, second)


def tucker2_layers(
    conv: nn.Conv2d, r_out: int, r_in: int, out_basis: torch.Tensor | None = None
) -> nn.Sequential:
    w = conv.weight.detach()
    u_out = (
        torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)[0]
        if out_basis is None
        else out_basis
    )[:, :r_out]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(w.shape[1], -1), full_matrices=False)[0][
        :, :r_in
    ]
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
    reduce = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
    spatial = nn.Conv2d(
        r_in,
        r_out,
        _pair(conv.kernel_size),
        stride=_pair(conv.stride),
        padding=_pair(conv.padding),
        dilation=_pair(conv.dilation),
        bias=False,
    )
    expand = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
    reduce.weight.data.copy_(u_in.t()[:, :, None, None])
    spatial.weight.data.copy_(core)
    expand.weight.data.copy_(u_out[:, :, None, None])
    if conv.bias is not None and expand.bias is not None:
        expand.bias.data.copy_(conv.bias.detach())
    return nn.Sequential(reduce, spatial, expand)
