"""The torch form of uploaded ONNX graphs (onnx2torch): the converted module reproduces ONNX
Runtime, keeps the graph's input and output names through a re-export, and leaves no
stand-in torchvision behind; without onnx2torch the error names the install command.

The nets are small real architectures with random (seeded) weights: a ResNet-18-style
SimpleBaseline (heatmaps) and an RTMPose-like SimCC net (tests/pose_nets_support.py,
tests/simcc_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pose_nets_support import BASELINE_HW, export_pose_net, simple_baseline
from simcc_support import INPUT_HW, export_simcc_onnx, tiny_simcc

from pose_core.importers import onnx_torch
from pose_core.importers.onnx_torch import (
    ONNX2TORCH_INSTALL,
    TorchFormUnavailable,
    onnx2torch_available,
    onnx_to_torch,
)

needs_onnx2torch = pytest.mark.skipif(
    not onnx2torch_available(), reason=f"onnx2torch is not installed: {ONNX2TORCH_INSTALL}"
)


@pytest.fixture(scope="module")
def baseline_onnx(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("baseline") / "baseline.onnx"
    return export_pose_net(simple_baseline(), path, BASELINE_HW, ["heatmaps"])


def _ort_outputs(onnx_bytes: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return list(session.run(None, {session.get_inputs()[0].name: x}))


def _torch_outputs(module: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, list | tuple) else [out])]


@needs_onnx2torch
def test_converted_simple_baseline_matches_onnx_runtime(baseline_onnx: bytes) -> None:
    module = onnx_to_torch(baseline_onnx)
    x = np.random.default_rng(0).standard_normal((2, 3, *BASELINE_HW)).astype(np.float32)
    (want,), (got,) = _ort_outputs(baseline_onnx, x), _torch_outputs(module, x)
    assert got.shape == want.shape == (2, 17, 64, 48)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert module.input_names == ("image",) and module.output_names == ("heatmaps",)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in module.modules())


@needs_onnx2torch
def test_converted_simcc_net_matches_onnx_runtime_output_by_output(tmp_path: Path) -> None:
    onnx_bytes = export_simcc_onnx(tiny_simcc(seed=3), tmp_path / "simcc.onnx")
    module = onnx_to_torch(onnx_bytes)
    x = np.random.default_rng(1).standard_normal((3, 3, *INPUT_HW)).astype(np.float32)
    want, got = _ort_outputs(onnx_bytes, x), _torch_outputs(module, x)
    assert [g.shape for g in got] == [w.shape for w in want] == [(3, 17, 96), (3, 17, 128)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)
    assert module.output_names == ("simcc_x", "simcc_y")
    # the classifiers (MatMul + Add of constants in the graph) are layers with parameters
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert sorted((m.in_features, m.out_features) for m in linears) == [(192, 96), (192, 128)]
    assert all(m.bias is not None for m in linears)


@needs_onnx2torch
def test_reexport_keeps_the_graph_names(baseline_onnx: bytes, tmp_path: Path) -> None:
    import onnx

    from pose_core.export import export_onnx

    module = onnx_to_torch(baseline_onnx)
    path = export_onnx(module, tmp_path / "again.onnx", (1, 3, *BASELINE_HW))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["heatmaps"]
    x = np.random.default_rng(2).standard_normal((1, 3, *BASELINE_HW)).astype(np.float32)
    np.testing.assert_allclose(
        _ort_outputs(path.read_bytes(), x)[0], _ort_outputs(baseline_onnx, x)[0], atol=1e-4
    )


@needs_onnx2torch
def test_the_torchvision_stand_in_does_not_outlive_the_import() -> None:
    onnx_torch.import_onnx2torch()
    assert "torchvision" not in sys.modules or sys.modules["torchvision"].__spec__ is not None
    nms = sys.modules["onnx2torch.node_converters.nms"]
    if getattr(nms.torchvision, "__spec__", None) is None:  # the stand-in: a clear error
        with pytest.raises(TorchFormUnavailable, match="torchvision"):
            nms.torchvision.ops.nms()


def test_without_onnx2torch_the_error_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "onnx2torch", raising=False)
    monkeypatch.setattr(onnx_torch, "onnx2torch_available", lambda: False)
    with pytest.raises(TorchFormUnavailable) as raised:
        onnx_to_torch(b"not even parsed")
    assert "pip install --no-deps onnx2torch==1.5.15" in str(raised.value)


@needs_onnx2torch
def test_a_deep_copy_keeps_the_graph_names(baseline_onnx: bytes) -> None:
    import copy

    module = copy.deepcopy(onnx_to_torch(baseline_onnx))
    assert module.input_names == ("image",) and module.output_names == ("heatmaps",)
