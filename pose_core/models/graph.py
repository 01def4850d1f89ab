"""A torch module that runs an imported dataflow graph, and its pickle-free storage.

A :class:`GraphModel` owns its layers as ordinary submodules (every conv is an ``nn.Conv2d``
attribute, found by ``named_modules()``) and a list of :class:`Node` s that say how tensors flow
between them. Intermediate 4-D tensors are NCHW. ``forward`` returns a tuple in the order of
``output_names``.

Storage: ``recipe()`` is JSON (nodes, op params, output names, input spec and one spec per
module read from the live modules, so it follows pruning and layer replacement);
``from_recipe(recipe, state_dict)`` rebuilds the model. ``save_graph_model`` writes
``recipe.json`` + ``weights.safetensors``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pose_core.models.layers import build_module, module_spec

RECIPE_FORMAT = "posecompress.graph"
RECIPE_VERSION = 1
RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "weights.safetensors"
INPUT_TENSOR = "input"


class GraphRecipeError(ValueError):
    """A recipe is malformed or does not match its weights."""


@dataclass(frozen=True)
class Node:
    """One operation: ``output = op(*inputs)``; ``module`` names the submodule it calls, if any.

    Ops (params):
      - ``conv`` / ``channel_pad`` / ``depth_to_space``: call ``module``; optional ``pad``
        ``[left, right, top, bottom]`` zero padding before and ``activation`` after.
      - ``add``: elementwise sum of two inputs, optional ``activation``.
      - ``pad``: spatial zero padding ``[left, right, top, bottom]``.
      - ``resize_bilinear``: ``size`` ``[H, W]``, half-pixel centres (``align_corners=False``).
      - ``max_pool``: ``kernel``, ``stride`` (pairs), ``pad`` ``[l, r, t, b]`` (with -inf).
      - ``reshape``: ``shape`` as TFLite gives it for NHWC data; dim 0 becomes the batch size.
        A 4-D input is read in NHWC order, a 4-D result is returned NCHW.
      - ``concat``: ``axis`` in the internal (NCHW for 4-D) layout.
      - ``sigmoid``.
    """

    op: str
    inputs: tuple[str, ...]
    output: str
    module: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "inputs": list(self.inputs), "output": self.output}
        if self.module is not None:
            data["module"] = self.module
        if self.params:
            data["params"] = self.params
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Node:
        return cls(op=data["op"], inputs=tuple(data["inputs"]), output=data["output"],
                   module=data.get("module"), params=dict(data.get("params", {})))


@dataclass(frozen=True)
class GraphOutput:
    """A named model output: which tensor, and whether a 4-D tensor is returned NHWC."""

    name: str
    tensor: str
    nhwc: bool = False


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.relu6(x)
    if activation == "relu_n1_to_1":
        return x.clamp(-1.0, 1.0)
    if activation == "tanh":
        return torch.tanh(x)
    raise GraphRecipeError(f"unknown activation {activation!r}")


def _pad(x: torch.Tensor, pad: Sequence[int] | None, value: float = 0.0) -> torch.Tensor:
    if not pad or not any(pad):
        return x
    return F.pad(x, tuple(int(p) for p in pad), value=value)


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


OpFn = Callable[["GraphModel", Node, list[torch.Tensor]], torch.Tensor]


def _op_module(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    assert node.module is not None
    layer = model.get_submodule(node.module)
    y = layer(_pad(xs[0], node.params.get("pad")))
    return _activate(y, node.params.get("activation"))


def _op_add(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return _activate(xs[0] + xs[1], node.params.get("activation"))


def _op_pad(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return _pad(xs[0], node.params["pad"])


def _op_resize_bilinear(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    size = tuple(int(s) for s in node.params["size"])
    return F.interpolate(xs[0], size=size, mode="bilinear", align_corners=False)


def _op_max_pool(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    x = _pad(xs[0], node.params.get("pad"), value=float("-inf"))
    return F.max_pool2d(x, kernel_size=tuple(node.params["kernel"]),
                        stride=tuple(node.params["stride"]))


def _op_reshape(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    x = _to_nhwc(xs[0])
    shape = [int(s) for s in node.params["shape"]]
    y = x.reshape(x.shape[0], *shape[1:])
    return y.permute(0, 3, 1, 2) if y.dim() == 4 else y


def _op_concat(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return _activate(torch.cat(xs, dim=int(node.params["axis"])), node.params.get("activation"))


def _op_sigmoid(model: GraphModel, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.sigmoid(xs[0])


OPS: dict[str, OpFn] = {
    "conv": _op_module,
    "channel_pad": _op_module,
    "depth_to_space": _op_module,
    "add": _op_add,
    "pad": _op_pad,
    "resize_bilinear": _op_resize_bilinear,
    "max_pool": _op_max_pool,
    "reshape": _op_reshape,
    "concat": _op_concat,
    "sigmoid": _op_sigmoid,
}


class GraphModel(nn.Module):
    """Runs ``nodes`` over the submodules in ``layers``; input NCHW float32, batch dim free.

    ``input_spec`` describes the input (``shape`` [C, H, W], ``layout``, ``range``,
    ``channel_order``); ``metadata`` is free JSON (source file, model family).

    ``tensor_hook``, when set, is applied to every node's output (``hook(node, tensor) ->
    tensor``); quantization-aware training uses it to fake-quantize the tensors ONNX Runtime
    will quantize. It is not part of the recipe.
    """

    def __init__(self, layers: Mapping[str, nn.Module], nodes: Sequence[Node],
                 outputs: Sequence[GraphOutput], input_spec: Mapping[str, Any],
                 metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.nodes: list[Node] = list(nodes)
        self.outputs: list[GraphOutput] = list(outputs)
        self.input_spec: dict[str, Any] = dict(input_spec)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.tensor_hook: Callable[[Node, torch.Tensor], torch.Tensor] | None = None
        self._check_graph()
        self._release = self._release_plan()

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(out.name for out in self.outputs)

    def _check_graph(self) -> None:
        known = {INPUT_TENSOR}
        for node in self.nodes:
            if node.op not in OPS:
                raise GraphRecipeError(f"unknown op {node.op!r}")
            missing = [t for t in node.inputs if t not in known]
            if missing:
                raise GraphRecipeError(f"node {node.output} reads undefined tensors {missing}")
            if node.module is not None and node.module not in self._modules:
                raise GraphRecipeError(f"node {node.output} calls unknown module {node.module}")
            known.add(node.output)
        for out in self.outputs:
            if out.tensor not in known:
                raise GraphRecipeError(f"output {out.name} reads undefined tensor {out.tensor}")

    def _release_plan(self) -> list[tuple[str, ...]]:
        """Tensors that can be dropped after each node (last use), to bound memory."""
        keep = {out.tensor for out in self.outputs}
        last_use: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            for name in node.inputs:
                last_use[name] = index
        plan: list[list[str]] = [[] for _ in self.nodes]
        for name, index in last_use.items():
            if name not in keep:
                plan[index].append(name)
        return [tuple(names) for names in plan]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, C, H, W) float32 -> outputs in ``output_names`` order."""
        env: dict[str, torch.Tensor] = {INPUT_TENSOR: x}
        hook = self.tensor_hook
        for node, release in zip(self.nodes, self._release, strict=True):
            y = OPS[node.op](self, node, [env[name] for name in node.inputs])
            env[node.output] = y if hook is None else hook(node, y)
            for name in release:
                del env[name]
        return tuple(_to_nhwc(env[out.tensor]) if out.nhwc else env[out.tensor]
                     for out in self.outputs)

    # -- recipe -----------------------------------------------------------------------------

    def recipe(self) -> dict[str, Any]:
        """JSON description of the graph; module specs are read from the live modules."""
        return {
            "format": RECIPE_FORMAT,
            "version": RECIPE_VERSION,
            "input_spec": {**self.input_spec, "output_names": list(self.output_names)},
            "outputs": [{"name": o.name, "tensor": o.tensor, "nhwc": o.nhwc} for o in self.outputs],
            "nodes": [node.to_json() for node in self.nodes],
            "modules": {name: module_spec(layer) for name, layer in self.named_children()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any],
                    state_dict: Mapping[str, torch.Tensor] | None = None) -> GraphModel:
        """Rebuild a model from :meth:`recipe` output and (optionally) its ``state_dict``."""
        if recipe.get("format") != RECIPE_FORMAT:
            raise GraphRecipeError(f"not a {RECIPE_FORMAT} recipe: format={recipe.get('format')!r}")
        if int(recipe.get("version", 0)) > RECIPE_VERSION:
            raise GraphRecipeError(f"recipe version {recipe['version']} is newer than "
                                   f"supported {RECIPE_VERSION}")
        try:
            layers = {name: build_module(spec) for name, spec in recipe["modules"].items()}
            nodes = [Node.from_json(n) for n in recipe["nodes"]]
            outputs = [GraphOutput(o["name"], o["tensor"], bool(o.get("nhwc", False)))
                       for o in recipe["outputs"]]
            input_spec = {k: v for k, v in recipe["input_spec"].items() if k != "output_names"}
        except (KeyError, TypeError) as exc:
            raise GraphRecipeError(f"malformed recipe: {exc!r}") from exc
        model = cls(layers, nodes, outputs, input_spec, recipe.get("metadata"))
        if state_dict is not None:
            try:
                model.load_state_dict(dict(state_dict), strict=True)
            except RuntimeError as exc:
                raise GraphRecipeError(f"weights do not match the recipe: {exc}") from exc
        return model.eval()


def save_graph_model(model: GraphModel, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``recipe.json`` and ``weights.safetensors`` into ``directory``; returns both paths."""
    from safetensors.torch import save_file

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    recipe_path, weights_path = target / RECIPE_FILE, target / WEIGHTS_FILE
    recipe_path.write_text(json.dumps(model.recipe(), indent=1), encoding="utf-8")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(weights_path), metadata={"format": RECIPE_FORMAT})
    return [recipe_path, weights_path]


def load_graph_model(directory: str | os.PathLike[str]) -> GraphModel:
    """Inverse of :func:`save_graph_model` (no pickle involved)."""
    from safetensors.torch import load_file

    source = Path(directory)
    try:
        recipe = json.loads((source / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GraphRecipeError(f"cannot read {source / RECIPE_FILE}: {exc}") from exc
    return GraphModel.from_recipe(recipe, load_file(str(source / WEIGHTS_FILE)))
