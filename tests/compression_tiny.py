"""A tiny BlazePose-shaped GraphModel (BlazePose's code path) for compression tests.

Input (N, 3, 256, 256) in [0, 1]; outputs ``landmarks`` (N, 195) and ``presence`` (N, 1), with a
depthwise -> pointwise residual block whose shortcut is max-pooled and channel-padded
(``ChannelPad(before=2, after=...)``), like BlazePose's stage transitions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pose_core.compression.data import CropSet
from pose_core.models.graph import GraphModel, GraphOutput, Node
from pose_core.models.layers import ChannelPad


def tiny_pose_model(seed: int = 0) -> GraphModel:
    torch.manual_seed(seed)
    layers: dict[str, nn.Module] = {
        "stem": nn.Conv2d(3, 8, 4, stride=4),  # 64 x 64
        "b1_dw": nn.Conv2d(8, 8, 3, stride=2, groups=8),  # 32 x 32 (padding as a node param)
        "b1_pw": nn.Conv2d(8, 16, 1),
        "b1_pad": ChannelPad(2, 6),
        "b2_conv": nn.Conv2d(16, 16, 3, stride=2, padding=1),  # 16 x 16
        "b2_dw": nn.Conv2d(16, 16, 3, padding=1, groups=16),
        "b2_pw": nn.Conv2d(16, 16, 1),
        "down": nn.Conv2d(16, 24, 2, stride=2),  # 8 x 8
        "head": nn.Conv2d(24, 195, 8),
        "presence_head": nn.Conv2d(24, 1, 8),
    }
    with torch.no_grad():
        layers["head"].weight.mul_(8.0)
        layers["head"].bias.add_(128.0)  # landmarks around the crop centre, in pixels
    relu6 = {"activation": "relu6"}
    nodes = [
        Node("conv", ("input",), "s", "stem", relu6),
        Node("conv", ("s",), "b1a", "b1_dw", {"pad": [0, 1, 0, 1]}),
        Node("conv", ("b1a",), "b1b", "b1_pw"),
        Node(
            "max_pool",
            ("s",),
            "b1m",
            None,
            {"kernel": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0]},
        ),
        Node("channel_pad", ("b1m",), "b1p", "b1_pad"),
        Node("add", ("b1b", "b1p"), "b1", None, relu6),
        Node("conv", ("b1",), "b2c", "b2_conv", relu6),
        Node("conv", ("b2c",), "b2a", "b2_dw"),
        Node("conv", ("b2a",), "b2b", "b2_pw"),
        Node("add", ("b2b", "b2c"), "b2", None, relu6),
        Node("conv", ("b2",), "d", "down", relu6),
        Node("conv", ("d",), "h", "head"),
        Node("reshape", ("h",), "landmarks", None, {"shape": [1, 195]}),
        Node("conv", ("d",), "ph", "presence_head"),
        Node("reshape", ("ph",), "pl", None, {"shape": [1, 1]}),
        Node("sigmoid", ("pl",), "presence"),
    ]
    outputs = [GraphOutput("landmarks", "landmarks"), GraphOutput("presence", "presence")]
    spec = {"shape": [3, 256, 256], "layout": "NCHW", "range": [0.0, 1.0], "channel_order": "RGB"}
    return GraphModel(layers, nodes, outputs, spec, {"family": "tiny_test"}).eval()


def random_crops(n: int = 16, seed: int = 0, labelled: bool = False) -> CropSet:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, 256, 256), dtype=np.float32)
    targets = None
    if labelled:
        targets = np.zeros((n, 33, 3), np.float32)
        targets[:, :, :2] = rng.uniform(64, 192, size=(n, 33, 2))
        targets[:, ::2, 2] = 2.0
    return CropSet(images, targets)
