"""SimCC keypoint models (RTMPose-style, bring-your-own ONNX): crops -> two 1-D
classifications per keypoint -> people.

A SimCC model outputs ``simcc_x`` (N, K, W * s) and ``simcc_y`` (N, K, H * s) for an input of
W x H pixels and split ratio ``s``: bin ``b`` of ``simcc_x`` stands for input x = ``b / s``.
Decoding follows MMPose's ``SimCCLabel``: the argmax of each axis divided by ``s`` (input index
coordinates, + 0.5 for continuous pixels as for heatmaps); the keypoint's score is the smaller
of the two maxima. Preprocessing (crop, aspect ratio, normalisation) is the heatmap model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from pose_core.inference.heatmap import ChannelOrder, HeatmapModel, HeatmapModelError
from pose_core.inference.types import Runner


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Argmax decoding of SimCC outputs.

    Args:
        simcc_x: (N, K, W * s) scores (logits or probabilities) over x bins.
        simcc_y: (N, K, H * s) scores over y bins.
        split_ratio: bins per input pixel ``s``.

    Returns:
        (N, K, 2) float64 x, y in input index coordinates, and (N, K) float64 scores
        (the smaller of the two axes' maxima).
    """
    x = np.asarray(simcc_x, dtype=np.float64)
    y = np.asarray(simcc_y, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise HeatmapModelError(
            f"SimCC outputs must be N x K x bins with the same N x K, got {x.shape} and {y.shape}"
        )
    coords = np.stack([x.argmax(axis=-1), y.argmax(axis=-1)], axis=-1) / float(split_ratio)
    scores = np.minimum(x.max(axis=-1), y.max(axis=-1))
    return coords, scores


class SimccModel(HeatmapModel):
    """A SimCC model as a :class:`~pose_core.inference.keypoint_model.KeypointModel`.

    Args: those of :class:`~pose_core.inference.heatmap.HeatmapModel`, plus
        split_ratio: SimCC bins per input pixel (RTMPose: 2.0).
        output_order: indices of the ``simcc_x`` and ``simcc_y`` outputs in the runner's
            outputs (default: the first two, x first).
    """

    def __init__(
        self,
        runner: Runner,
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        channel_order: ChannelOrder,
        keypoint_names: Sequence[str] | Literal["coco17"],
        split_ratio: float,
        output_order: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(runner, input_size, mean, std, channel_order, keypoint_names)
        if not split_ratio > 0:
            raise HeatmapModelError(f"the SimCC split ratio must be positive, not {split_ratio}")
        self.split_ratio = float(split_ratio)
        self.output_order = output_order

    def decode(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The runner's outputs -> (N, 17, 2) COCO-17 keypoints in continuous input pixels
        and (N, 17) scores."""
        ix, iy = self.output_order
        simcc_x, simcc_y = np.asarray(outputs[ix]), np.asarray(outputs[iy])
        width, height = self.input_size
        expected = (round(width * self.split_ratio), round(height * self.split_ratio))
        if simcc_x.ndim != 3 or (simcc_x.shape[-1], simcc_y.shape[-1]) != expected:
            raise HeatmapModelError(
                f"expected SimCC outputs N x K x {expected[0]} and N x K x {expected[1]}, "
                f"got {simcc_x.shape} and {simcc_y.shape}"
            )
        channels = self.coco_channels
        coords, scores = decode_simcc(simcc_x[:, channels], simcc_y[:, channels], self.split_ratio)
        return coords + 0.5, scores
