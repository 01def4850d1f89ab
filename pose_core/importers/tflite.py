"""Convert a float ``.tflite`` model (BlazePose family) into a :class:`GraphModel` of real layers.

Convolutions become ``nn.Conv2d`` (depthwise as ``groups=C``) with NHWC weights transposed to
NCHW; TF "SAME" padding is symmetric conv padding when possible and an explicit zero pad before
the conv otherwise (stride 2 on even sizes pads one pixel at the end only). The model takes NCHW
float32 with a free batch dimension; outputs keep the TFLite layout (NHWC for 4-D) with a free
batch dimension. Only the requested outputs are built: branches feeding nothing else are dropped.

Supported ops: PAD, DEQUANTIZE (float16 weights), DENSIFY (sparse weights), CONV_2D,
DEPTHWISE_CONV_2D, ADD, RESIZE_BILINEAR, MAX_POOL_2D, RESHAPE, LOGISTIC, CONCATENATION,
DEPTH_TO_SPACE.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from pose_core.importers.tflite_ops import GraphBuilder
from pose_core.importers.tflite_reader import TfliteGraph, TfliteImportError
from pose_core.models.graph import GraphModel, GraphOutput, Node

logger = logging.getLogger(__name__)

__all__ = [
    "BLAZEPOSE_DETECTOR",
    "BLAZEPOSE_LANDMARK",
    "ModelFamily",
    "TfliteImportError",
    "import_blazepose_detector",
    "import_blazepose_landmark",
    "import_tflite",
]



@dataclass(frozen=True)
class ModelFamily:
    """A known model: output names by TFLite output position, default outputs, input range."""

    name: str
    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    output_names: tuple[str, ...]
    default_outputs: tuple[str, ...]
    input_range: tuple[float, float]


BLAZEPOSE_LANDMARK = ModelFamily(
    name="blazepose_landmark",
    input_shape=(1, 256, 256, 3),
    output_shapes=((1, 195), (1, 1), (1, 256, 256, 1), (1, 64, 64, 39), (1, 117)),
    output_names=("landmarks", "presence", "segmentation", "heatmap", "world_landmarks"),
    default_outputs=("landmarks", "presence"),
    input_range=(0.0, 1.0),
)
BLAZEPOSE_DETECTOR = ModelFamily(
    name="blazepose_detector",
    input_shape=(1, 224, 224, 3),
    output_shapes=((1, 2254, 12), (1, 2254, 1)),
    output_names=("regressors", "scores"),
    default_outputs=("regressors", "scores"),
    input_range=(-1.0, 1.0),
)
_FAMILIES = (BLAZEPOSE_LANDMARK, BLAZEPOSE_DETECTOR)


def _detect_family(graph: TfliteGraph) -> ModelFamily | None:
    if len(graph.inputs) != 1:
        return None
    for family in _FAMILIES:
        if (graph.shape(graph.inputs[0]) == family.input_shape
                and tuple(graph.shape(t) for t in graph.outputs) == family.output_shapes):
            return family
    return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "output"


def _needed_ops(graph: TfliteGraph, targets: Sequence[int]) -> set[int]:
    """Indices of ops that the target tensors depend on."""
    needed: set[int] = set()
    stack = list(targets)
    while stack:
        op = graph.producer.get(stack.pop())
        if op is None or op.index in needed:
            continue
        needed.add(op.index)
        stack.extend(op.inputs)
    return needed


def _prune_dead(nodes: list[Node], layers: dict[str, nn.Module],
                outputs: Sequence[GraphOutput]) -> tuple[list[Node], dict[str, nn.Module]]:
    """Drop nodes (and their layers) whose result no output reads."""
    live = {out.tensor for out in outputs}
    kept: list[Node] = []
    for node in reversed(nodes):
        if node.output in live:
            kept.append(node)
            live.update(node.inputs)
    kept.reverse()
    used = {node.module for node in kept if node.module is not None}
    return kept, {name: layer for name, layer in layers.items() if name in used}


def import_tflite(path: str | Path, outputs: Sequence[str] | None = None) -> GraphModel:
    """Build a :class:`GraphModel` from a float ``.tflite`` file.

    Args:
        path: the ``.tflite`` file.
        outputs: output names to keep, in this order. Known BlazePose models name their outputs
            (landmark: landmarks, presence, segmentation, heatmap, world_landmarks; detector:
            regressors, scores); other models use their TFLite output names made identifier-safe.
            ``None`` keeps the family's default outputs, or all outputs of an unknown model.

    Raises:
        TfliteImportError: unreadable file, unsupported op or unknown output name.
    """
    return _import_graph(TfliteGraph(path), outputs)


def _import_graph(graph: TfliteGraph, outputs: Sequence[str] | None) -> GraphModel:
    path = graph.path
    if len(graph.inputs) != 1 or len(graph.shape(graph.inputs[0])) != 4:
        raise TfliteImportError("only models with one NHWC image input are supported")
    if not graph.is_float32(graph.inputs[0]):
        raise TfliteImportError("only float32 inputs are supported (not quantized models)")
    family = _detect_family(graph)
    names = (family.output_names if family is not None
             else tuple(_safe_name(graph.name(t)) for t in graph.outputs))
    by_name = dict(zip(names, graph.outputs, strict=True))
    by_name.update({graph.name(t): t for t in graph.outputs if graph.name(t) not in by_name})
    wanted = list(outputs) if outputs is not None else list(
        family.default_outputs if family is not None else names)
    if len(set(names)) != len(names):
        raise TfliteImportError(f"output names collide once made identifier-safe: {names}")
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted or len(set(wanted)) != len(wanted):
        raise TfliteImportError(f"bad output selection {wanted}; available: {list(names)}")
    targets = [by_name[n] for n in wanted]
    if len(set(targets)) != len(targets):
        raise TfliteImportError(f"output selection {wanted} names the same output twice")

    builder = GraphBuilder(graph)
    needed = _needed_ops(graph, targets)
    for op in graph.ops:
        if op.index in needed:
            builder.convert(op)
    graph_outputs = [GraphOutput(_public_name(name, names, graph, by_name), builder.tensor(t),
                                 nhwc=len(graph.shape(t)) == 4)
                     for name, t in zip(wanted, targets, strict=True)]
    nodes, layers = _prune_dead(builder.nodes, builder.layers, graph_outputs)

    _, height, width, channels = graph.shape(graph.inputs[0])
    input_spec: dict[str, Any] = {
        "name": "input", "shape": [channels, height, width], "layout": "NCHW",
        "dtype": "float32", "channel_order": "RGB" if channels == 3 else None,
        "range": list(family.input_range) if family is not None else None,
    }
    metadata = {"source": "tflite", "source_file": Path(path).name,
                "family": family.name if family is not None else None}
    model = GraphModel(layers, nodes, graph_outputs, input_spec, metadata).eval()
    logger.info("imported %s: %d nodes, %d layers, outputs %s", Path(path).name, len(nodes),
                len(layers), model.output_names)
    return model


def _public_name(requested: str, names: Sequence[str], graph: TfliteGraph,
                 by_name: dict[str, int]) -> str:
    """The stable short name of a requested output (TFLite names map to the short ones)."""
    if requested in names:
        return requested
    return names[graph.outputs.index(by_name[requested])]


def import_blazepose_landmark(path: str | Path,
                              outputs: Sequence[str] = BLAZEPOSE_LANDMARK.default_outputs
                              ) -> GraphModel:
    """BlazePose landmark model: input (N, 3, 256, 256) RGB in [0, 1]; outputs ``landmarks``
    (N, 195) = 39 x (x, y, z, visibility logit, presence logit) in input pixels and ``presence``
    (N, 1) probability (plus ``heatmap`` (N, 64, 64, 39), ``world_landmarks`` (N, 117) and
    ``segmentation`` (N, 256, 256, 1) when asked)."""
    return _import_family(path, BLAZEPOSE_LANDMARK, outputs)


def import_blazepose_detector(path: str | Path,
                              outputs: Sequence[str] = BLAZEPOSE_DETECTOR.default_outputs
                              ) -> GraphModel:
    """BlazePose person detector: input (N, 3, 224, 224) RGB in [-1, 1]; outputs ``regressors``
    (N, 2254, 12) and ``scores`` (N, 2254, 1) logits."""
    return _import_family(path, BLAZEPOSE_DETECTOR, outputs)


def _import_family(path: str | Path, family: ModelFamily, outputs: Sequence[str]) -> GraphModel:
    graph = TfliteGraph(path)
    detected = _detect_family(graph)
    if detected != family:
        raise TfliteImportError(f"{Path(path).name} is not a {family.name} model (detected: "
                                f"{detected.name if detected is not None else 'unknown'})")
    return _import_graph(graph, outputs)
