"""Small layers of imported graphs and their JSON specs.

Every module a :class:`~pose_core.models.graph.GraphModel` owns is described by a spec read from
the LIVE module (so a pruned conv or a conv replaced by an ``nn.Sequential`` is described as it is
now, not as it was imported) and rebuilt from that spec by :func:`build_module`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ChannelPad(nn.Module):
    """Zero-pad the channel axis of an NCHW tensor: ``before`` channels in front, ``after`` behind.

    A pruner that removes channels of the padded tensor changes ``before``/``after`` (they are
    plain attributes, read into the recipe from the live module).
    """

    def __init__(self, before: int, after: int) -> None:
        super().__init__()
        self.before = int(before)
        self.after = int(after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, before + C + after, H, W)."""
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))

    def extra_repr(self) -> str:
        return f"before={self.before}, after={self.after}"


class DepthToSpace(nn.Module):
    """TFLite/TensorFlow ``DEPTH_TO_SPACE`` (DCR order) on NCHW tensors.

    TFLite takes input channel ``(i * block + j) * C_out + c`` to output pixel ``(h*block+i,
    w*block+j)``, channel ``c``; ``nn.PixelShuffle`` uses ``c * block**2 + i * block + j`` (CRD).
    """

    def __init__(self, block_size: int) -> None:
        super().__init__()
        self.block_size = int(block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, b*b*C, H, W) -> (N, C, H*b, W*b)."""
        b = self.block_size
        n, _, h, w = x.shape
        y = x.reshape(n, b, b, -1, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, -1, h * b, w * b)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}"


class UnsupportedModuleError(TypeError):
    """A module type has no JSON spec (it cannot be stored in a recipe)."""


def _pair(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    return [int(v) for v in value]


def module_spec(module: nn.Module) -> dict[str, Any]:
    """JSON spec of a live module (types: Conv2d, Sequential, ChannelPad, DepthToSpace,
    Identity, ReLU, ReLU6, BatchNorm2d)."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise UnsupportedModuleError("Conv2d with string padding cannot be stored in a recipe")
        return {
            "type": "Conv2d",
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": _pair(module.kernel_size),
            "stride": _pair(module.stride),
            "padding": _pair(module.padding),
            "dilation": _pair(module.dilation),
            "groups": module.groups,
            "bias": module.bias is not None,
        }
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential",
                "children": [[name, module_spec(child)] for name, child in module.named_children()]}
    if isinstance(module, ChannelPad):
        return {"type": "ChannelPad", "before": module.before, "after": module.after}
    if isinstance(module, DepthToSpace):
        return {"type": "DepthToSpace", "block_size": module.block_size}
    if isinstance(module, nn.BatchNorm2d):
        return {"type": "BatchNorm2d", "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    if type(module) in (nn.Identity, nn.ReLU, nn.ReLU6):
        return {"type": type(module).__name__}
    raise UnsupportedModuleError(f"no recipe spec for module type {type(module).__name__}")


def build_module(spec: dict[str, Any]) -> nn.Module:
    """Inverse of :func:`module_spec` (weights are loaded separately)."""
    kind = spec["type"]
    if kind == "Conv2d":
        return nn.Conv2d(spec["in_channels"], spec["out_channels"],
                         kernel_size=tuple(spec["kernel_size"]), stride=tuple(spec["stride"]),
                         padding=tuple(spec["padding"]), dilation=tuple(spec["dilation"]),
                         groups=spec["groups"], bias=spec["bias"])
    if kind == "Sequential":
        seq = nn.Sequential()
        for name, child in spec["children"]:
            seq.add_module(name, build_module(child))
        return seq
    if kind == "ChannelPad":
        return ChannelPad(spec["before"], spec["after"])
    if kind == "DepthToSpace":
        return DepthToSpace(spec["block_size"])
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"],
                              affine=spec["affine"],
                              track_running_stats=spec["track_running_stats"])
    simple: dict[str, type[nn.Module]] = {"Identity": nn.Identity, "ReLU": nn.ReLU,
                                          "ReLU6": nn.ReLU6}
    if kind in simple:
        return simple[kind]()
    raise UnsupportedModuleError(f"unknown module type in recipe: {kind!r}")
