"""A small RTMPose-like SimCC network for the tests: conv backbone, a 1x1 conv to K keypoint
maps, and two linear classifiers over the flattened maps giving ``simcc_x`` (N, K, W * s)
and ``simcc_y`` (N, K, H * s), plus a per-keypoint bias over the bins. Its weights are random
(seeded); ``peaks`` puts a large bias on chosen bins so that the argmax is known whatever the
input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pose_core.inference.crop import CropRect, apply_affine, crop_to_image_matrix
from pose_core.inference.heatmap import fit_rect_to_aspect

#: [height, width] of the test net's input, and its split ratio.
INPUT_HW = (64, 48)
SPLIT_RATIO = 2.0
SIMCC_MANIFEST = {
    "kind": "simcc",
    "input_size": list(INPUT_HW),
    "simcc_split_ratio": SPLIT_RATIO,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "rgb",
    "keypoints": "coco17",
}


class TinySimcc(nn.Module):
    def __init__(self, keypoints: int = 17, width: int = 16) -> None:
        super().__init__()
        height, input_w = INPUT_HW
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(width, keypoints, 1)
        cells = (height // 4) * (input_w // 4)
        self.x_classifier = nn.Linear(cells, round(input_w * SPLIT_RATIO))
        self.y_classifier = nn.Linear(cells, round(height * SPLIT_RATIO))
        self.x_bias = nn.Parameter(torch.zeros(keypoints, round(input_w * SPLIT_RATIO)))
        self.y_bias = nn.Parameter(torch.zeros(keypoints, round(height * SPLIT_RATIO)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.head(self.backbone(x)).flatten(2)
        return self.x_classifier(maps) + self.x_bias, self.y_classifier(maps) + self.y_bias


def tiny_simcc(peaks: np.ndarray | None = None, seed: int = 0) -> TinySimcc:
    """The net with seeded random weights; ``peaks`` (K, 2) int [x bin, y bin] per keypoint
    makes each keypoint's argmax land there (the classifiers' weights are scaled down and a
    bias of 10 is put on the bins)."""
    torch.manual_seed(seed)
    model = TinySimcc().eval()
    if peaks is not None:
        with torch.no_grad():
            for axis, classifier, bias in ((0, model.x_classifier, model.x_bias),
                                           (1, model.y_classifier, model.y_bias)):
                classifier.weight.mul_(1e-3)
                classifier.bias.zero_()
                bias.zero_()
                bias[torch.arange(len(peaks)), torch.as_tensor(peaks[:, axis])] = 10.0
    return model


def spread_peaks(keypoints: int = 17) -> np.ndarray:
    """(K, 2) distinct [x bin, y bin] per keypoint, spread over the input."""
    height, width = INPUT_HW
    k = np.arange(keypoints)
    x = (4 + 5 * k) % round(width * SPLIT_RATIO)
    y = (6 + 7 * k) % round(height * SPLIT_RATIO)
    return np.stack([x, y], axis=1)


def export_simcc_onnx(model: nn.Module, path: Path) -> bytes:
    height, width = INPUT_HW
    torch.onnx.export(
        model,
        (torch.rand(1, 3, height, width),),
        str(path),
        input_names=["input"],
        output_names=["simcc_x", "simcc_y"],
        dynamic_axes={"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}},
        dynamo=False,
    )
    return path.read_bytes()


def expected_keypoints(rect: CropRect, peaks: np.ndarray) -> np.ndarray:
    """(K, 2) image pixels of the SimCC bins ``peaks`` (K, 2) decoded in the crop ``rect``:
    bin / split ratio + 0.5 input pixels, through the crop of the input's aspect ratio."""
    height, width = INPUT_HW
    matrix = crop_to_image_matrix(fit_rect_to_aspect(rect, width, height), width, height)
    return apply_affine(matrix, peaks / SPLIT_RATIO + 0.5)
