"""Activation equalization before INT8: same fp32 function, better-used activation ranges."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from pose_core.compression import quantize_graph as qg
from pose_core.compression import quantize_mixed as qm
from pose_core.compression.base import OnnxModel
from pose_core.compression.configs import Budget, QuantizeConfig
from pose_core.compression.quantize_equalize import MAX_SCALE, equalize_activations
from pose_core.compression.registry import compress


class ExpandDepthwise(nn.Module):
    """MobileNet-style expand (1x1) -> ReLU6 -> depthwise -> ReLU6 -> project, half of the
    expanded channels 100x weaker than the rest (and amplified back by the depthwise conv, as
    folded batch norms do), and a ReLU pair behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)
        self.expand2 = nn.Conv2d(8, 8, 3, 1, 1)
        self.dw2 = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.head = nn.Conv2d(8, 10, 16)
        with torch.no_grad():
            self.expand.weight *= 20.0
            self.expand.weight[8:] *= 0.01
            self.expand.bias[8:] *= 0.01
            self.dw.weight[8:] *= 100.0  # the weak channels still matter downstream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.expand(x), 0, 6)
        x = self.project(torch.clamp(self.dw(x), 0, 6))
        x = torch.relu(self.dw2(torch.relu(self.expand2(x))))
        return self.head(x).flatten(1) * 16.0


def _export(module: nn.Module) -> onnx.ModelProto:
    torch.manual_seed(0)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module.eval(),
            torch.rand(1, 3, 32, 32),
            buf,
            input_names=["input"],
            output_names=["landmarks"],
            dynamo=False,
        )
    return qg.preprocess_fp32(onnx.load_from_string(buf.getvalue()))


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    torch.manual_seed(0)
    return _export(ExpandDepthwise())


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).random((40, 3, 32, 32), dtype=np.float32)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _conv_weight(model: onnx.ModelProto, index: int) -> np.ndarray:
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return _weights(model)[convs[index].input[1]]


def test_equalized_graph_computes_the_same_function(
    model: onnx.ModelProto, crops: np.ndarray
) -> None:
    equalized, pairs = equalize_activations(model, crops[:32])
    assert pairs == 2  # expand -> ReLU6 -> dw and expand2 -> ReLU -> dw2; not dw -> project
    ref = qm.run_first_output(model.SerializeToString(), crops)
    out = qm.run_first_output(equalized.SerializeToString(), crops)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    # the dense consumer of the depthwise output keeps its weights
    np.testing.assert_array_equal(_conv_weight(equalized, 2), _conv_weight(model, 2))
    assert not np.array_equal(_conv_weight(equalized, 0), _conv_weight(model, 0))


def test_weak_channels_are_lifted_to_the_relu6_range(
    model: onnx.ModelProto, crops: np.ndarray
) -> None:
    equalized, _ = equalize_activations(model, crops[:32])
    before = _conv_weight(model, 0).reshape(16, -1)
    after = _conv_weight(equalized, 0).reshape(16, -1)
    scale = (np.abs(after).max(axis=1) / np.abs(before).max(axis=1)).round(3)
    assert np.all(scale >= 1.0) and np.all(scale <= MAX_SCALE)
    assert np.median(scale[8:]) > 5.0 * np.median(scale[:8])  # the weak half is lifted more
    # the depthwise conv divides each channel by the same factor
    dw_before = _conv_weight(model, 1).reshape(16, -1)
    dw_after = _conv_weight(equalized, 1).reshape(16, -1)
    ratio = np.abs(dw_before).max(axis=1) / np.abs(dw_after).max(axis=1)
    np.testing.assert_allclose(ratio, scale, rtol=2e-3)


def test_equalization_lowers_the_int8_error(model: onnx.ModelProto, crops: np.ndarray) -> None:
    def fidelity(equalize: bool) -> float:
        config = QuantizeConfig(
            calibrator="minmax", equalize_activations=equalize, budget=Budget(max_mean_px=None)
        )
        result = compress(OnnxModel(model.SerializeToString()), config, crops)
        if equalize:
            assert result.report["equalized_pairs"] == 2
            assert result.report["equalized_fp32_error_px"] < 0.01
        else:
            assert "equalized_pairs" not in result.report
        return float(result.report["fidelity_px"])

    plain, equalized = fidelity(False), fidelity(True)
    assert equalized < 0.7 * plain


def test_shared_and_dense_consumers_are_left_alone(crops: np.ndarray) -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1)
            self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
            self.pw = nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.clamp(self.stem(x), 0, 6)  # read by the depthwise conv and the add
            return (x + self.pw(torch.clamp(self.dw(x), 0, 6))).flatten(1)

    model = _export(Residual())
    equalized, pairs = equalize_activations(model, crops[:8])
    assert pairs == 0
    for name, value in _weights(model).items():
        np.testing.assert_array_equal(_weights(equalized)[name], value)
