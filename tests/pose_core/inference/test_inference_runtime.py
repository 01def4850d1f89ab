import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pose_core.inference.runtime import OnnxRunner, RuntimeLoadError, SessionCache


def _scale_model(factor: float, batch: int | str = "N") -> bytes:
    """y = x * factor and z = sum over C, H, W of x; input (batch, 3, 4, 4)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 4, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 1])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [factor])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["y"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["z"]),
    ]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "scale", [x], [y, z], initializer=[k, axes, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_runner_returns_outputs_in_model_order(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_scale_model(2.0))
    runner = OnnxRunner(path, threads=1)
    batch = np.random.default_rng(0).random((3, 3, 4, 4), dtype=np.float32)
    y, z = runner(batch)
    np.testing.assert_allclose(y, batch * 2.0, rtol=1e-6)
    np.testing.assert_allclose(z[:, 0], batch.sum(axis=(1, 2, 3)), rtol=1e-5)
    assert runner.output_names == ["y", "z"]


def test_fixed_batch_model_runs_item_by_item() -> None:
    runner = OnnxRunner(_scale_model(3.0, batch=1), threads=1)
    batch = np.ones((4, 3, 4, 4), dtype=np.float32)
    y, z = runner(batch)
    assert y.shape == (4, 3, 4, 4) and z.shape == (4, 1)
    np.testing.assert_allclose(y, 3.0)


def test_bad_model_raises_load_error() -> None:
    with pytest.raises(RuntimeLoadError):
        OnnxRunner(b"not an onnx model", threads=1)


def test_session_cache_is_a_bounded_lru() -> None:
    cache = SessionCache(max_sessions=2, threads=1)
    loads: list[str] = []

    def loader(key: str, factor: float):
        def load() -> bytes:
            loads.append(key)
            return _scale_model(factor)

        return load

    a = cache.get("a" * 64, loader("a", 1.0))
    assert cache.get("a" * 64, loader("a", 1.0)) is a
    cache.get("b" * 64, loader("b", 2.0))
    cache.get("a" * 64, loader("a", 1.0))  # a is now the most recent
    cache.get("c" * 64, loader("c", 3.0))  # evicts b
    assert loads == ["a", "b", "c"]
    assert "b" * 64 not in cache and "a" * 64 in cache and len(cache) == 2
    cache.get("b" * 64, loader("b", 2.0))
    assert loads == ["a", "b", "c", "b"]


def test_session_cache_builds_once_under_concurrency() -> None:
    cache = SessionCache(max_sessions=4, threads=1)
    loads: list[int] = []
    start = threading.Barrier(6)
    got: list[OnnxRunner] = []

    def load() -> bytes:
        loads.append(1)
        return _scale_model(5.0)

    def worker() -> None:
        start.wait()
        got.append(cache.get("d" * 64, load))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert len(got) == 6 and all(r is got[0] for r in got)


def test_session_cache_rejects_zero_size() -> None:
    with pytest.raises(ValueError):
        SessionCache(max_sessions=0, threads=1)
