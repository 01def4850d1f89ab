"""Accuracy-aware mixed precision: per-node sensitivity and greedy fp32 fallback.

A QDQ graph keeps the fp32 graph's node names, and every quantized input of a node is read
through a ``DequantizeLinear``. :func:`keep_fp32` turns chosen nodes back to fp32 by wiring
their inputs to the fp32 tensors again (original activation and float weight/bias) while every
other consumer keeps its Q/DQ pair: the node really runs in fp32, nothing else changes, and no
re-quantization is needed, so measuring one node costs one session start plus a forward pass
over the held-out crops.

Fidelity is the mean landmark error in crop pixels against the fp32 parent's outputs (the
model's first output read as ``(N, K, 5)`` = ``x, y, z, visibility, presence``; the first
``max_landmarks`` landmarks are scored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

logger = logging.getLogger(__name__)

LANDMARK_STRIDE = 5
#: activations ORT's QDQ quantizer deletes when the output quantization can clip instead
FOLDABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})
BODY_LANDMARKS = 33


@dataclass(frozen=True)
class NodeSensitivity:
    """How much the landmark error drops when one node alone goes back to fp32."""

    node: str
    error_px: float  #: mean landmark error of the INT8 graph with this node in fp32
    gain_px: float  #: full-INT8 error minus ``error_px`` (positive = the node hurts)


def session(model_bytes: bytes, threads: int = 2) -> object:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads."""
    from pose_core.inference.runtime import ort_session

    return ort_session(model_bytes, threads, spin=None, quiet=True)


def run_first_output(model_bytes: bytes, crops: np.ndarray, threads: int = 2) -> np.ndarray:
    """First output of the model on every crop, batch 1 (graphs may have a fixed batch)."""
    sess = session(model_bytes, threads)
    name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
    outs = [sess.run(None, {name: crops[i : i + 1]})[0] for i in range(len(crops))]  # type: ignore[attr-defined]
    return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs])


def landmark_error_px(
    reference: np.ndarray, output: np.ndarray, max_landmarks: int = BODY_LANDMARKS
) -> float:
    """Mean Euclidean ``(x, y)`` distance between two (N, K*5) landmark outputs.

    Falls back to the mean absolute difference when the width is not a multiple of 5.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {out.shape}")
    if ref.shape[1] % LANDMARK_STRIDE:
        return float(np.abs(ref - out).mean())
    ref3 = ref.reshape(len(ref), -1, LANDMARK_STRIDE)[:, :max_landmarks, :2]
    out3 = out.reshape(len(out), -1, LANDMARK_STRIDE)[:, :max_landmarks, :2]
    return float(np.linalg.norm(ref3 - out3, axis=-1).mean())


def keep_fp32(qdq: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """Copy of ``qdq`` in which ``nodes`` read fp32 inputs and fp32 weights again.

    ``fp32`` is the graph ``qdq`` was quantized from (same node names). Dequantize nodes and
    quantized initializers left without consumers are removed.
    """
    wanted = set(nodes)
    originals = {n.name: n for n in fp32.graph.node if n.name in wanted}
    missing = wanted - set(originals)
    if missing:
        raise ValueError(f"nodes not in the fp32 graph: {sorted(missing)}")
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    graph = out.graph
    have = {t.name for t in graph.initializer}
    producer = {o: n.op_type for n in graph.node for o in n.output}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}
    for node in graph.node:
        if node.name not in wanted:
            continue
        original = originals[node.name]
        if len(original.input) != len(node.input):
            raise ValueError(f"node {node.name} changed arity during quantization")
        for i, name in enumerate(original.input):
            if name in fp32_inits:
                # ORT names a dequantized bias like the float one: give the float copy its own name
                node.input[i] = _add_float_initializer(graph, fp32_inits[name], have, set(producer))
            else:
                node.input[i] = name
    _restore_folded_activations(graph, fp32, wanted, have, set(producer))
    _prune_dead(graph)
    return out


def _restore_folded_activations(
    graph: onnx.GraphProto,
    fp32: onnx.ModelProto,
    wanted: set[str],
    have: set[str],
    produced: set[str],
) -> None:
    """Make every fp32 node see (and produce) clipped activations, explicitly.

    ORT's quantizer deletes a Relu/Clip that follows a quantized node and lets the output
    Q/DQ pair do the clipping (the producer's output takes the activation's name). When the
    consumer of that pair runs in fp32, ORT's session graph optimizer drops the Q/DQ pair in
    front of it as useless, and the ReLU6 clipping disappears with it. Measured on BlazePose:
    one fp32 depthwise conv took the INT8 graph from 15 to 56 px of error with the session's
    optimizations on and to 10 px with them off; ``nodes_to_exclude`` of ORT's quantizer
    shows the same effect. Here a fp32 node reads ``Clip(raw)`` explicitly, and a fp32
    node whose own activation was folded gets it back after its output.
    """
    fp32_producer = {o: n for n in fp32.graph.node for o in n.output}
    fp32_inits = {t.name: t for t in fp32.graph.initializer}

    def copy_activation(activation: onnx.NodeProto, source: str, target: str) -> onnx.NodeProto:
        restored = onnx.NodeProto()
        restored.CopyFrom(activation)
        restored.name = f"{target}__act"
        restored.input[0] = source
        restored.output[0] = target
        for i, name in enumerate(restored.input[1:], start=1):
            if name and name in fp32_inits:
                restored.input[i] = _add_float_initializer(graph, fp32_inits[name], have, produced)
        return restored

    def folded(name: str) -> onnx.NodeProto | None:
        activation = fp32_producer.get(name)
        if activation is None or activation.op_type not in FOLDABLE_ACTIVATIONS:
            return None
        return activation if producer_type.get(name) != activation.op_type else None

    producer_type = {o: n.op_type for n in graph.node for o in n.output}
    clipped: set[str] = set()
    position = 0
    while position < len(graph.node):
        node = graph.node[position]
        if node.name not in wanted:
            position += 1
            continue
        # input side: the raw tensor of a folded activation is unclipped; clip it here
        for i, name in enumerate(node.input):
            activation = folded(name)
            if activation is not None:
                target = f"{name}__clipped"
                if target not in clipped:
                    graph.node.insert(position, copy_activation(activation, name, target))
                    clipped.add(target)
                    position += 1
                node.input[i] = target
        # output side: the node's own activation was folded into its output Q/DQ
        activation = folded(node.output[0])
        position += 1
        if activation is not None:
            raw = f"{node.output[0]}__preact"
            graph.node.insert(position, copy_activation(activation, raw, node.output[0]))
            node.output[0] = raw
            position += 1


def _add_float_initializer(
    graph: onnx.GraphProto, init: onnx.TensorProto, have: set[str], produced: set[str]
) -> str:
    """Add fp32 ``init`` to ``graph`` (once), renamed if a node already produces its name."""
    name = init.name if init.name not in produced else f"{init.name}__fp32"
    if name not in have:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = name
        graph.initializer.append(copy)
        have.add(name)
    return name


def _prune_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads (graph outputs count) and unused initializers."""
    while True:
        used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {name for n in graph.node for name in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)


def rank_sensitivity(
    qdq: onnx.ModelProto,
    fp32: onnx.ModelProto,
    candidates: Sequence[str],
    evaluate: Callable[[onnx.ModelProto], float],
    base_error: float,
) -> list[NodeSensitivity]:
    """Error of the INT8 graph with each candidate alone kept fp32, most harmful node first."""
    result = []
    for name in candidates:
        error = evaluate(keep_fp32(qdq, fp32, [name]))
        result.append(NodeSensitivity(name, error, base_error - error))
        logger.debug("sensitivity %s: %.3f px", name, error)
    return sorted(result, key=lambda s: s.gain_px, reverse=True)


@dataclass(frozen=True)
class MixedPrecisionStep:
    """One point of the greedy search: ``n_fp32`` most harmful nodes in fp32, measured error."""

    n_fp32: int
    error_px: float


def greedy_fp32_fallback(
    qdq: onnx.ModelProto,
    fp32: onnx.ModelProto,
    ranking: Sequence[NodeSensitivity],
    evaluate: Callable[[onnx.ModelProto], float],
    budget_px: float,
    max_fp32_nodes: int,
) -> tuple[list[str], list[MixedPrecisionStep]]:
    """Keep the most harmful nodes fp32, one more at a time, until the error is within budget.

    Every step is measured end to end on the combined graph (sensitivities do not add up).
    Returns the fp32 node list of the best point found and the whole trade-off curve.
    """
    curve: list[MixedPrecisionStep] = []
    kept: list[str] = []
    best: tuple[float, list[str]] | None = None
    for item in ranking[:max_fp32_nodes]:
        if item.gain_px <= 0:
            break
        kept.append(item.node)
        error = evaluate(keep_fp32(qdq, fp32, kept))
        curve.append(MixedPrecisionStep(len(kept), error))
        if best is None or error < best[0]:
            best = (error, list(kept))
        if error <= budget_px:
            return list(kept), curve
    return (best[1] if best is not None else []), curve
