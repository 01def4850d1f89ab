"""INT8 dense weights re-encoded as u8 where ONNX Runtime's u8 x s8 kernels saturate."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from pose_core.compression import quantize_graph as qg
from pose_core.inference import int8_weights as iw
from pose_core.inference.runtime import ort_session


class DenseThenDepthwise(nn.Module):
    """A dense 1x1 conv with large same-sign weights (every pair of u8 x s8 products overflows
    int16 for inputs near the top of their range), then a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Conv2d(32, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        with torch.no_grad():
            self.dense.weight.uniform_(0.5, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(torch.relu(self.dense(x)))


def _qdq() -> onnx.ModelProto:
    torch.manual_seed(0)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            DenseThenDepthwise().eval(),
            torch.rand(1, 32, 6, 6),
            buf,
            input_names=["input"],
            output_names=["out"],
            dynamo=False,
        )
    fp32 = qg.preprocess_fp32(onnx.load_from_string(buf.getvalue()))
    values = {"input": (0.0, 1.0)}
    out = ort_session(fp32.SerializeToString()).run(None, {"input": np.ones((1, 32, 6, 6), "f")})
    names = [n.output[0] for n in fp32.graph.node]
    values.update({name: (0.0, 40.0) for name in names[:-1]})
    values[names[-1]] = (float(out[0].min()) - 1, float(out[0].max()) + 1)
    return qg.quantize_qdq(fp32, values, per_channel=True)


def _dequantized_fp32(qdq: onnx.ModelProto) -> onnx.ModelProto:
    """``qdq`` with every weight's DequantizeLinear replaced by its float values: the exact
    result the integer kernels should reproduce."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in list(model.graph.node):
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w = inits[node.input[0]].astype(np.float32)
            scale, zero = inits[node.input[1]], inits[node.input[2]].astype(np.float32)
            shape = (-1,) + (1,) * (w.ndim - 1) if scale.ndim else ()
            value = (w - zero.reshape(shape)) * scale.reshape(shape)
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            model.graph.node.remove(node)
    return model


@pytest.fixture
def int8_weights(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    iw.u8s8_saturates.cache_clear()
    yield monkeypatch
    iw.u8s8_saturates.cache_clear()


def _weight_types(model: onnx.ModelProto) -> dict[str, int]:
    """``dense`` / ``depthwise`` -> element type of the weight its conv's DequantizeLinear reads."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    kinds = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kinds["depthwise" if group > 1 else "dense"] = inits[dq[node.input[1]]]
    return kinds


def test_dense_weights_become_u8_and_depthwise_stays_s8() -> None:
    model = _qdq()
    before = _weight_types(model)
    assert set(before.values()) == {onnx.TensorProto.INT8}
    assert iw.reencode_u8_weights(model) == 1
    assert _weight_types(model) == {
        "dense": onnx.TensorProto.UINT8,
        "depthwise": onnx.TensorProto.INT8,
    }
    onnx.checker.check_model(model)
    used = {name for node in model.graph.node for name in node.input}
    assert {t.name for t in model.graph.initializer} <= used  # the s8 originals are gone


def test_reencoded_weights_dequantize_to_the_same_values() -> None:
    original, model = _qdq(), _qdq()
    iw.reencode_u8_weights(model)
    a, b = _dequantized_fp32(original), _dequantized_fp32(model)
    floats = lambda m: {  # noqa: E731
        t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.data_type == 1
    }
    fa, fb = floats(a), floats(b)
    dq_outputs = {n.output[0] for n in original.graph.node if n.op_type == "DequantizeLinear"}
    shared = dq_outputs & set(fa) & set(fb)
    assert shared
    for name in shared:
        np.testing.assert_array_equal(fa[name], fb[name])


def test_u8_weights_compute_the_exact_result(int8_weights: pytest.MonkeyPatch) -> None:
    """Inputs at the top of their range overflow int16 pair sums in the s8 kernel of CPUs
    without VNNI; the u8 encoding matches the dequantized float graph on every CPU."""
    _choose(int8_weights, "u8")
    qdq = _qdq()
    x = {"input": np.full((1, 32, 6, 6), 0.99, dtype=np.float32)}
    # unoptimized, ONNX Runtime runs every Q/DQ pair and conv in float: the exact arithmetic
    exact = ort_session(qdq.SerializeToString(), optimization="disable").run(None, x)[0]
    got = ort_session(qdq.SerializeToString()).run(None, x)[0]
    assert np.abs(exact).max() > 1.0
    np.testing.assert_allclose(got, exact, atol=1e-4 * float(np.abs(exact).max()))


def _choose(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(iw.INT8_WEIGHTS_ENV, value)
    iw.u8s8_saturates.cache_clear()


def test_override_and_detection(int8_weights: pytest.MonkeyPatch) -> None:
    data = _qdq().SerializeToString()
    _choose(int8_weights, "s8")
    assert iw.u8s8_saturates() is False
    assert iw.exact_int8_source(data) is data
    _choose(int8_weights, "u8")
    rewritten = iw.exact_int8_source(data)
    assert isinstance(rewritten, bytes) and rewritten != data
    assert _weight_types(onnx.load_from_string(rewritten))["dense"] == onnx.TensorProto.UINT8
    int8_weights.setattr(iw, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    int8_weights.setattr(iw.platform, "machine", lambda: "x86_64")
    _choose(int8_weights, "auto")
    assert iw.u8s8_saturates() is True
    int8_weights.setattr(iw, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    _choose(int8_weights, "auto")
    assert iw.u8s8_saturates() is False
    int8_weights.setattr(iw, "cpu_flags", lambda: None)  # flags unknown: the exact encoding
    _choose(int8_weights, "auto")
    assert iw.u8s8_saturates() is True
    int8_weights.setattr(iw.platform, "machine", lambda: "aarch64")
    _choose(int8_weights, "auto")
    assert iw.u8s8_saturates() is False


def test_fp32_graphs_are_left_alone(int8_weights: pytest.MonkeyPatch) -> None:
    _choose(int8_weights, "u8")
    fp32 = _dequantized_fp32(_qdq()).SerializeToString()
    assert iw.exact_int8_source(fp32) is fp32
