"""SSD anchors, generated as MediaPipe's SsdAnchorsCalculator does.

The options of :data:`POSE_DETECTION_ANCHORS` are those of MediaPipe's pose detector
(``mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`` and
``tasks/cc/vision/pose_detector/pose_detector_graph.cc``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SsdAnchorOptions:
    """The subset of MediaPipe's ``SsdAnchorsCalculatorOptions`` that BlazePose uses."""

    input_width: int
    input_height: int
    strides: tuple[int, ...]
    min_scale: float
    max_scale: float
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


POSE_DETECTION_ANCHORS = SsdAnchorOptions(
    input_width=224,
    input_height=224,
    strides=(8, 16, 32, 32, 32),
    min_scale=0.1484375,
    max_scale=0.75,
)


def _scale(options: SsdAnchorOptions, index: int) -> float:
    count = len(options.strides)
    if count == 1:
        return (options.min_scale + options.max_scale) / 2.0
    return options.min_scale + (options.max_scale - options.min_scale) * index / (count - 1)


def generate_anchors(options: SsdAnchorOptions = POSE_DETECTION_ANCHORS) -> np.ndarray:
    """Anchors in normalised input coordinates.

    Returns:
        (num_anchors, 4) float32 array of x_center, y_center, width, height; for the pose
        detector 2254 rows (28x28x2 + 14x14x2 + 7x7x6), ordered as the model's outputs.
    """
    rows: list[tuple[float, float, float, float]] = []
    strides = options.strides
    layer = 0
    while layer < len(strides):
        widths: list[float] = []
        heights: list[float] = []
        last = layer
        # Layers that share a stride are merged into one feature map, in order.
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _scale(options, last)
            for ratio in options.aspect_ratios:
                widths.append(scale * math.sqrt(ratio))
                heights.append(scale / math.sqrt(ratio))
            if options.interpolated_scale_aspect_ratio > 0.0:
                next_scale = 1.0 if last == len(strides) - 1 else _scale(options, last + 1)
                interpolated = math.sqrt(scale * next_scale)
                ratio = options.interpolated_scale_aspect_ratio
                widths.append(interpolated * math.sqrt(ratio))
                heights.append(interpolated / math.sqrt(ratio))
            last += 1
        stride = strides[layer]
        map_h = math.ceil(options.input_height / stride)
        map_w = math.ceil(options.input_width / stride)
        for y in range(map_h):
            for x in range(map_w):
                cx = (x + options.anchor_offset_x) / map_w
                cy = (y + options.anchor_offset_y) / map_h
                for w, h in zip(widths, heights, strict=True):
                    if options.fixed_anchor_size:
                        rows.append((cx, cy, 1.0, 1.0))
                    else:
                        rows.append((cx, cy, w, h))
        layer = last
    return np.asarray(rows, dtype=np.float32)
