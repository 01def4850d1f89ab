"""Quantization-aware fine-tuning on a tiny landmark-shaped net (fake-quant + distillation)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from compression_tiny import random_crops, tiny_pose_model
from torch import nn

from pose_core.compression import quantize_graph as qg
from pose_core.compression.base import CompressionError, OnnxModel
from pose_core.compression.configs import Budget, QuantizeConfig
from pose_core.compression.data import CropSet
from pose_core.compression.quantize import _onnx_bytes
from pose_core.compression.quantize_calibration import calibrate_ranges
from pose_core.compression.quantize_mixed import landmark_error_px, run_first_output
from pose_core.compression.quantize_qat import (
    FakeQuantStudent,
    PerChannelWeightFakeQuant,
    activation_quant_params,
    match_tensors,
    with_graph_weights,
)
from pose_core.compression.registry import compress
from pose_core.models.graph import INPUT_TENSOR


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


def _calibrated(model: object, crops: np.ndarray) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    fp32 = qg.preprocess_fp32(onnx.load_from_string(_onnx_bytes(model, (1, 3, 256, 256))))
    ranges = calibrate_ranges(fp32, crops, method="minmax")
    qdq = qg.strip_qdq(qg.quantize_qdq(fp32, ranges, per_channel=True), qg.output_tensors(fp32))
    return fp32, qdq


@pytest.mark.slow
def test_qat_runs_and_exports_int8() -> None:
    model = tiny_pose_model()
    crops = random_crops(24, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = QuantizeConfig(
        calibrator="minmax",
        qat_steps=3,
        qat_batch_size=4,
        budget=Budget(max_mean_px=None),
        num_holdout_crops=4,
        equalize_activations=False,
    )
    result = compress(model, config, crops)
    assert isinstance(result.model, OnnxModel)
    qat = result.report["qat"]
    assert qat["steps_done"] == 3
    assert qat["unmatched_tensors"] == 0 and qat["fake_quantized_tensors"] > 0
    assert qat["holdout_metric"] == "int8_landmark_px"  # the guard scored ORT's INT8 graph
    assert isinstance(qat["kept"], bool)
    best = min(qat["error_px"], result.report["ptq_error_px"])
    assert result.report["int8_error_px"] == pytest.approx(best, abs=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    graph = onnx.load_from_string(result.model.onnx_bytes)
    assert qg.float_weighted_nodes(graph) == set()


def test_qat_is_skipped_without_a_graph_form() -> None:
    """A plain nn.Module (no GraphModel) cannot be matched to the QDQ graph: post-training
    INT8, and the report says why."""
    torch.manual_seed(0)
    crops = np.random.default_rng(0).random((12, 3, 256, 256), dtype=np.float32)
    config = QuantizeConfig(
        calibrator="minmax", qat_steps=2, budget=Budget(max_mean_px=None), num_holdout_crops=3
    )
    result = compress(TinyLandmarkNet().eval(), config, CropSet(crops))
    assert "torch graph form" in result.report["qat"]["skipped"]
    assert result.report["int8_error_px"] == result.report["ptq_error_px"]


def test_every_quantized_tensor_is_found_in_the_graph_model() -> None:
    model = tiny_pose_model()
    crops = random_crops(4, seed=3).images
    fp32, qdq = _calibrated(model, crops)
    params = activation_quant_params(qdq)
    matched = match_tensors(model, fp32, params, crops[:1])
    assert set(matched) == set(params)
    # the input and the block outputs (after their fused activations) are among them
    assert {INPUT_TENSOR, "b1", "b2"} <= set(matched.values())
    assert all(scale > 0 and 0 <= zero <= 255 for scale, zero in params.values())


def test_fake_quant_student_reproduces_onnx_runtime() -> None:
    """With the QDQ graph's own scales, the student's output is ONNX Runtime's INT8 output
    (up to rounding in fused kernels), far closer than the fp32 model is."""
    model = tiny_pose_model()
    crops = random_crops(8, seed=3).images
    fp32, qdq = _calibrated(model, crops)
    ort_int8 = run_first_output(qdq.SerializeToString(), crops)
    params = activation_quant_params(qdq)
    matched = match_tensors(model, fp32, params, crops[:1])
    student = FakeQuantStudent(
        with_graph_weights(model, fp32), {matched[n]: params[n] for n in matched}
    )
    with torch.no_grad():
        simulated = student.module(torch.from_numpy(crops))[0].numpy()
        reference = model(torch.from_numpy(crops))[0].numpy()
    quantization_error = landmark_error_px(reference, ort_int8)
    simulation_error = landmark_error_px(simulated, ort_int8)
    assert quantization_error > 0
    assert simulation_error <= 0.25 * quantization_error

    frozen = student.finish()
    assert frozen.tensor_hook is None
    # finished weights sit on the per-channel int8 grid ORT uses
    weight = frozen.get_submodule("b2_pw").weight.detach().reshape(16, -1)
    steps = weight / (weight.abs().amax(1, keepdim=True) / 127.0)
    assert torch.allclose(steps, steps.round(), atol=1e-3)


def test_graph_weights_must_cover_the_model() -> None:
    model = tiny_pose_model()
    fp32, _ = _calibrated(model, random_crops(2).images)
    renamed = onnx.ModelProto()
    renamed.CopyFrom(fp32)
    renamed.graph.initializer[0].name = "something_else"
    with pytest.raises(CompressionError, match="does not carry"):
        with_graph_weights(model, renamed)
