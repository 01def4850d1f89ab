"""Quantization-aware fine-tuning on a tiny landmark-shaped net (fake-quant + distillation)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pose_core.compression import quantize_graph as qg
from pose_core.compression.base import OnnxModel
from pose_core.compression.data import CropSet
from pose_core.compression.quantize import QuantizeConfig
from pose_core.compression.quantize_qat import PerChannelWeightFakeQuant
from pose_core.compression.registry import compress


class TinyLandmarkNet(nn.Module):
    """(N, 3, 256, 256) -> landmarks (N, 195), presence (N, 1), like BlazePose's outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 4, 1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(16, 195, 1)
        self.presence = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.stem(x))
        x = self.pool(torch.nn.functional.relu6(self.pw(torch.relu(self.dw(x)))))
        return self.head(x).flatten(1) * 50.0 + 128.0, torch.sigmoid(self.presence(x)).flatten(1)


def test_weight_fake_quant_is_on_the_ort_grid() -> None:
    w = torch.randn(4, 3, 3, 3)
    q = PerChannelWeightFakeQuant()(w)
    scale = w.reshape(4, -1).abs().amax(1) / 127.0
    steps = q.reshape(4, -1) / scale[:, None]
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert (q - w).abs().max() <= scale.max() / 2 + 1e-6


@pytest.mark.slow
def test_qat_runs_and_exports_int8(tmp_path: object) -> None:
    torch.manual_seed(0)
    model = TinyLandmarkNet().eval()
    crops = np.random.default_rng(0).random((24, 3, 256, 256), dtype=np.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = QuantizeConfig(
        calibrator="minmax", qat_steps=3, qat_batch_size=4, max_landmark_error_px=None,
        num_holdout_crops=4,
    )
    result = compress(model, config, CropSet(crops))
    assert isinstance(result.model, OnnxModel)
    assert result.report["qat"]["steps_done"] == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    graph = onnx.load_from_string(result.model.onnx_bytes)
    assert qg.float_weighted_nodes(graph) == set()
    assert result.report["fidelity_px"] < 50.0
