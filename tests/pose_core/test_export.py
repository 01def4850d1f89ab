"""ONNX export: dynamic batch, output names kept, ONNX Runtime agrees with torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pose_core.export import OnnxExportError, export_onnx
from pose_core.models.graph import GraphModel, GraphOutput, Node
from pose_core.models.layers import ChannelPad, DepthToSpace


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torch_outputs(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(x))]


def _batch_dim(value_info) -> str | int:
    dim = value_info.type.tensor_type.shape.dim[0]
    return dim.dim_param or dim.dim_value


def _small_graph() -> GraphModel:
    """Every op kind of the importer on a 16 x 16 input (fast to export)."""
    torch.manual_seed(0)
    layers = {
        "conv_a": nn.Conv2d(3, 8, 3, stride=2, padding=0),
        "dw_b": nn.Conv2d(8, 8, 3, padding=1, groups=8),
        "pad_c": ChannelPad(2, 2),
        "conv_d": nn.Conv2d(8, 12, 1),
        "d2s_e": DepthToSpace(2),
        "conv_f": nn.Conv2d(3, 4, 1),
    }
    nodes = [
        Node("conv", ("input",), "a", "conv_a", {"pad": [0, 1, 0, 1], "activation": "relu6"}),
        Node("conv", ("a",), "b", "dw_b", {"activation": "relu"}),
        Node("max_pool", ("b",), "p", params={"kernel": [2, 2], "stride": [2, 2],
                                               "pad": [0, 0, 0, 0]}),
        Node("resize_bilinear", ("p",), "r", params={"size": [8, 8]}),
        Node("add", ("r", "a"), "s"),
        Node("pad", ("s",), "sp", params={"pad": [1, 1, 1, 1]}),
        Node("conv", ("s",), "d", "conv_d"),
        Node("depth_to_space", ("d",), "e", "d2s_e"),
        Node("conv", ("e",), "f", "conv_f"),
        Node("reshape", ("f",), "g", params={"shape": [1, -1, 2]}),
        Node("reshape", ("sp",), "h", params={"shape": [1, -1, 2]}),
        Node("concat", ("g", "h"), "i", params={"axis": 1}),
        Node("sigmoid", ("i",), "j"),
        Node("conv", ("input",), "k", "conv_f", {"activation": None}),
        Node("channel_pad", ("k",), "m", "pad_c"),
    ]
    outputs = [GraphOutput("scores", "j"), GraphOutput("padded", "m", nhwc=True)]
    spec = {"name": "input", "shape": [3, 16, 16], "layout": "NCHW", "range": [0.0, 1.0]}
    return GraphModel(layers, nodes, outputs, spec).eval()


@pytest.mark.slow  # the first torch.export in a process takes ~10 s
def test_small_graph_exports_with_dynamic_batch(tmp_path):
    model = _small_graph()
    path = export_onnx(model, tmp_path / "small.onnx", (1, 3, 16, 16))
    graph = onnx.load(path)
    assert [o.name for o in graph.graph.output] == ["scores", "padded"]
    assert graph.graph.input[0].name == "input"
    assert _batch_dim(graph.graph.input[0]) == "batch"
    assert all(_batch_dim(o) == "batch" for o in graph.graph.output)
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = _session(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 16, 16), dtype=np.float32)
        for got, want in zip(session.run(None, {"input": x}), _torch_outputs(model, x),
                             strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_export_rejects_old_opsets(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(_small_graph(), tmp_path / "x.onnx", (1, 3, 16, 16), opset=13)


def test_export_failure_is_reported(tmp_path):
    with pytest.raises(OnnxExportError):
        # the model cannot run on a 2-channel input
        export_onnx(_small_graph(), tmp_path / "x.onnx", (1, 2, 16, 16))


@pytest.mark.slow
def test_landmark_model_onnx_runtime_matches_torch(blazepose_landmark_model,
                                                   landmark_photo_crops, tmp_path):
    path = export_onnx(blazepose_landmark_model, tmp_path / "landmark.onnx", (1, 3, 256, 256))
    session = _session(path)
    assert [o.name for o in session.get_outputs()] == ["landmarks", "presence"]
    crops = landmark_photo_crops[:3]
    onnx_landmarks, onnx_presence = session.run(None, {"input": crops})
    torch_landmarks, torch_presence = _torch_outputs(blazepose_landmark_model, crops)
    assert onnx_landmarks.shape == (3, 195)
    xy = np.abs(onnx_landmarks - torch_landmarks).reshape(-1, 39, 5)[..., :2].max()
    assert xy <= 0.01
    np.testing.assert_allclose(onnx_landmarks, torch_landmarks, atol=0.02)
    np.testing.assert_allclose(onnx_presence, torch_presence, atol=1e-4)
    single = session.run(None, {"input": crops[:1]})[0]
    np.testing.assert_allclose(single, onnx_landmarks[:1], atol=1e-3)


@pytest.mark.slow
def test_detector_onnx_runtime_matches_torch(blazepose_detector_model, detector_photo_inputs,
                                             tmp_path):
    path = export_onnx(blazepose_detector_model, tmp_path / "detector.onnx", (1, 3, 224, 224))
    session = _session(path)
    assert [o.name for o in session.get_outputs()] == ["regressors", "scores"]
    x = detector_photo_inputs[:2]
    for got, want in zip(session.run(None, {"input": x}),
                         _torch_outputs(blazepose_detector_model, x), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=5e-3)
