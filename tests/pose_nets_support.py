"""Small real pose architectures for the ONNX-upload compression tests: a ResNet-18-style
SimpleBaseline (Xiao et al. 2018: basic-block backbone, three 4x4 stride-2 deconvolutions,
a 1x1 conv to 17 heatmaps; 256 x 192 in, 64 x 48 out) at a quarter of its widths, exported to
ONNX with torch. The weights are random (seeded, with non-trivial BatchNorm statistics): the
tests check conversion, compression and serving, not accuracy."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: [height, width] of the SimpleBaseline input; its heatmaps are a quarter of it.
BASELINE_HW = (256, 192)
BASELINE_MANIFEST = {
    "kind": "heatmap",
    "input_size": list(BASELINE_HW),
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "rgb",
    "keypoints": "coco17",
}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            None
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class SimpleBaseline(nn.Module):
    """ResNet-18 layout (2-2-2-2 basic blocks) of ``width`` .. 8 x ``width`` channels."""

    def __init__(self, width: int = 16, deconv: int = 64, keypoints: int = 17) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            blocks += [BasicBlock(cin, cout, 1 if stage == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.backbone = nn.Sequential(*blocks)
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(cin, deconv, 4, 2, 1, bias=False),
                nn.BatchNorm2d(deconv),
                nn.ReLU(),
            ]
            cin = deconv
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(deconv, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(self.backbone(self.stem(x))))


def simple_baseline(seed: int = 0) -> SimpleBaseline:
    torch.manual_seed(seed)
    model = SimpleBaseline().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model


def export_pose_net(
    model: nn.Module, path: Path, input_hw: tuple[int, int], output_names: list[str]
) -> bytes:
    """``model`` as ONNX (torch's exporter, dynamic batch, input ``image``): the file's bytes."""
    from pose_core.export import export_onnx

    export_onnx(model, path, (1, 3, *input_hw), input_name="image", output_names=output_names)
    return path.read_bytes()
