"""The ``quantize`` method on a tiny conv net: INT8 QDQ, calibrators, fp32 fallback, FP16."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pose_core.compression import quantize_graph as qg
from pose_core.compression import quantize_mixed as qm
from pose_core.compression.base import OnnxModel
from pose_core.compression.configs import Budget, QuantizeConfig
from pose_core.compression.quantize_calibration import calibrate_ranges
from pose_core.compression.registry import compress, parse_config
from pose_core.inference.int8_weights import u8s8_saturates


class TinyPoseNet(nn.Module):
    """Depthwise/pointwise block with ReLU6 and a residual add, 2 landmarks x 5 values out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.dw = nn.Conv2d(16, 16, 5, 1, 2, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.down = nn.Conv2d(16, 32, 3, 2, 1)
        self.head = nn.Conv2d(32, 10, 8)
        self.pool = nn.AdaptiveAvgPool2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + torch.clamp(self.pw(torch.clamp(self.dw(x), 0, 6)), 0, 6)
        x = torch.relu(self.down(x))
        return self.head(self.pool(x)).flatten(1) * 16.0


@pytest.fixture(scope="module")
def tiny_onnx() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            TinyPoseNet().eval(),
            torch.rand(1, 3, 32, 32),
            buf,
            input_names=["input"],
            output_names=["landmarks"],
            dynamo=False,
        )
    return buf.getvalue()


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.random((48, 3, 32, 32), dtype=np.float32)
    base[:4] *= 3.0  # a few bright outliers: percentile must clip them, minmax must not
    return base


def _ranges(model_bytes: bytes, crops: np.ndarray, method: str) -> dict[str, tuple[float, float]]:
    fp32 = qg.preprocess_fp32(onnx.load_from_string(model_bytes))
    return calibrate_ranges(fp32, crops, method=method, percentile=99.0, num_bins=512)  # type: ignore[arg-type]


def test_int8_output_close_and_smaller(tiny_onnx: bytes, crops: np.ndarray) -> None:
    config = QuantizeConfig(calibrator="minmax", budget=Budget(max_mean_px=None))
    result = compress(OnnxModel(tiny_onnx), config, crops)
    assert isinstance(result.model, OnnxModel)
    q_bytes = result.model.onnx_bytes
    assert len(q_bytes) < 0.5 * len(tiny_onnx)
    ops = {n.op_type for n in onnx.load_from_string(q_bytes).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref = qm.run_first_output(tiny_onnx, crops[-8:])
    out = qm.run_first_output(q_bytes, crops[-8:])
    scale = np.abs(ref).max()
    assert np.abs(out - ref).max() < 0.1 * scale
    assert result.report["n_calib"] > 0 and result.report["fidelity_px"] >= 0


def test_calibrators_give_different_ranges(tiny_onnx: bytes, crops: np.ndarray) -> None:
    ranges = {m: _ranges(tiny_onnx, crops, m) for m in ("minmax", "percentile", "entropy")}
    tensor = "input"
    assert ranges["minmax"][tensor][1] == pytest.approx(float(crops.max()), rel=1e-5)
    assert ranges["percentile"][tensor][1] < ranges["minmax"][tensor][1]
    widths = {m: sum(hi - lo for lo, hi in r.values()) for m, r in ranges.items()}
    assert len({round(w, 4) for w in widths.values()}) == 3


def test_calibration_changes_the_quantized_graph(tiny_onnx: bytes, crops: np.ndarray) -> None:
    fp32 = qg.preprocess_fp32(onnx.load_from_string(tiny_onnx))
    scales = []
    for method in ("minmax", "percentile"):
        q = qg.quantize_qdq(fp32, _ranges(tiny_onnx, crops, method), per_channel=True)
        init = {t.name: t for t in q.graph.initializer}
        scales.append(float(onnx.numpy_helper.to_array(init["input_scale"])))
    assert scales[0] > scales[1]


def test_kept_fp32_nodes_really_run_fp32(tiny_onnx: bytes, crops: np.ndarray) -> None:
    fp32 = qg.preprocess_fp32(onnx.load_from_string(tiny_onnx))
    q = qg.quantize_qdq(fp32, _ranges(tiny_onnx, crops, "minmax"), per_channel=True)
    nodes = qg.weighted_nodes(fp32)
    assert qg.float_weighted_nodes(q) == set()
    mixed = qm.keep_fp32(q, fp32, nodes[:2])
    onnx.checker.check_model(mixed)
    assert qg.float_weighted_nodes(mixed) == set(nodes[:2])
    # keeping every node fp32 gives back the fp32 outputs up to the remaining activation Q/DQ
    all_fp32 = qm.keep_fp32(q, fp32, nodes)
    assert qg.float_weighted_nodes(all_fp32) == set(nodes)
    ref = qm.run_first_output(tiny_onnx, crops[-4:])
    assert qm.landmark_error_px(
        ref, qm.run_first_output(all_fp32.SerializeToString(), crops[-4:])
    ) < (qm.landmark_error_px(ref, qm.run_first_output(q.SerializeToString(), crops[-4:])) + 1e-6)


def test_fp32_node_after_folded_relu6_keeps_the_clipping(crops: np.ndarray) -> None:
    """ORT folds ReLU6 into the Q/DQ pair and drops that pair in front of a fp32 node."""
    torch.manual_seed(0)
    net = TinyPoseNet().eval()
    with torch.no_grad():
        net.dw.weight.mul_(20.0)  # most depthwise outputs now exceed 6: the clamp matters
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net,
            torch.rand(1, 3, 32, 32),
            buf,
            input_names=["input"],
            output_names=["landmarks"],
            dynamo=False,
        )
    fp32 = qg.preprocess_fp32(onnx.load_from_string(buf.getvalue()))
    q = qg.quantize_qdq(fp32, _ranges(buf.getvalue(), crops, "minmax"), per_channel=True)
    ref = qm.run_first_output(fp32.SerializeToString(), crops[-8:])
    full = qm.landmark_error_px(ref, qm.run_first_output(q.SerializeToString(), crops[-8:]))
    pw = next(n for n in qg.weighted_nodes(fp32) if "pw" in n)
    mixed = qm.keep_fp32(q, fp32, [pw])
    error = qm.landmark_error_px(ref, qm.run_first_output(mixed.SerializeToString(), crops[-8:]))
    assert error < 2.0 * full + 1e-3


def test_budget_drives_fp32_fallback(tiny_onnx: bytes, crops: np.ndarray) -> None:
    config = QuantizeConfig(
        calibrator="minmax",
        budget=Budget(max_mean_px=1e-6, max_latency_ratio=None),
        max_fp32_nodes=2,
    )
    result = compress(OnnxModel(tiny_onnx), config, crops)
    report = result.report
    assert report["sensitivity_top"], "sensitivity ranking must be reported"
    assert len(report["excluded_nodes"]) <= 2
    assert not report["error_within_budget"]
    assert isinstance(result.model, OnnxModel)
    graph = onnx.load_from_string(result.model.onnx_bytes)
    weighted = set(qg.weighted_nodes(graph)) | qg.float_weighted_nodes(graph)
    assert qg.float_weighted_nodes(graph) == set(report["excluded_nodes"]) & weighted


def test_fp16_weights_half_size_and_close(tiny_onnx: bytes, crops: np.ndarray) -> None:
    result = compress(OnnxModel(tiny_onnx), QuantizeConfig(mode="fp16_weights"), crops)
    assert isinstance(result.model, OnnxModel)
    blob = result.model.onnx_bytes
    assert 0.4 < len(blob) / len(tiny_onnx) < 0.6
    graph = onnx.load_from_string(blob).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ref = qm.run_first_output(tiny_onnx, crops[:4])
    out = qm.run_first_output(blob, crops[:4])
    np.testing.assert_allclose(out, ref, atol=1e-2 * np.abs(ref).max())


def test_outputs_stay_fp32(tiny_onnx: bytes, crops: np.ndarray) -> None:
    result = compress(OnnxModel(tiny_onnx), QuantizeConfig(budget=Budget(max_mean_px=None)), crops)
    assert isinstance(result.model, OnnxModel)
    model = onnx.load_from_string(result.model.onnx_bytes)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producer["landmarks"] == "Mul"  # not a DequantizeLinear
    onnx.checker.check_model(model)


def test_config_json_round_trip() -> None:
    config = QuantizeConfig(
        calibrator="entropy", num_bins=1024, budget=Budget(max_mean_px=1.5), qat_steps=0
    )
    again = parse_config(config.model_dump(mode="json"))
    assert again == config
    assert QuantizeConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError):
        parse_config({"method": "quantize", "calibrator": "dynamic"})


@pytest.mark.slow
def test_torch_module_input_is_exported_and_not_mutated(crops: np.ndarray) -> None:
    torch.manual_seed(1)
    model = TinyPoseNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = QuantizeConfig(
        calibrator="percentile", percentile=99.9, budget=Budget(max_mean_px=None)
    )
    result = compress(model, config, crops[:16])
    assert isinstance(result.model, OnnxModel)
    assert result.report["calibrator"] == "percentile"
    # which integer kernels the fidelity was measured with (this CPU's)
    assert result.report["measured_with_u8_dense_weights"] is u8s8_saturates()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fp32_fallback_never_exceeds_the_latency_budget(
    tiny_onnx: bytes, crops: np.ndarray
) -> None:
    """No graph is 1000x faster than fp32: the fallback is cut back to full INT8."""
    budget = Budget(max_mean_px=1e-6, max_latency_ratio=1e-3, latency_tolerance=0.0)
    result = compress(
        OnnxModel(tiny_onnx), QuantizeConfig(calibrator="minmax", budget=budget), crops
    )
    report = result.report
    assert report["tradeoff_curve"], "the error budget asked for fp32 nodes"
    assert report["excluded_nodes"] == []
    probes = report["fallback_latency"]
    assert probes[0]["n_fp32"] >= 1 and probes[-1]["n_fp32"] <= 1
    assert all(p["latency_ratio"] > 1e-3 for p in probes)
