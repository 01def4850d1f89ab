"""Linear layers of a converted ONNX graph (:mod:`pose_core.importers.onnx_torch`).

torch exports a ``nn.Linear`` applied to an N x K x C tensor (RTMPose's SimCC classifiers and
its GAU layers) as ``MatMul`` by a constant weight, then ``Add`` of a constant bias; onnx2torch
turns that weight into a constant buffer of a ``torch.matmul`` module, which no compression
step sees: it is not trained, factorized, or counted as a parameter. :func:`as_linear_layers`
puts an ``nn.Linear`` with those weights in the graph's place (the outputs are the same).
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import fx, nn

logger = logging.getLogger(__name__)


def as_linear_layers(graph: fx.GraphModule) -> int:
    """Replace (in place) every ``MatMul`` by a constant 2-D float weight, and the ``Add`` of
    a constant bias that follows it, by one ``nn.Linear``; returns how many."""
    replaced = 0
    for node in list(graph.graph.nodes):
        if not _calls(graph, node, "OnnxMatMul") or len(node.args) != 2:
            continue
        source, weight_node = node.args
        weight = _constant(graph, weight_node)
        if weight is None or weight.dim() != 2 or not weight.is_floating_point():
            continue
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        linear.weight = nn.Parameter(weight.t().contiguous().clone())
        last, erased = node, [node]
        bias = _bias_add(graph, node, weight.shape[1])
        if bias is not None:
            last, bias_value = bias
            linear.bias = nn.Parameter(bias_value.clone())
            erased.insert(0, last)
        name = f"{node.target}_linear"
        graph.add_submodule(name, linear)
        with graph.graph.inserting_before(node):
            layer = graph.graph.call_module(name, (source,))
        last.replace_all_uses_with(layer)
        constants = [a for n in erased for a in n.args if isinstance(a, fx.Node)]
        for done in erased:
            graph.graph.erase_node(done)
        for constant in constants:
            if constant.op == "get_attr" and not constant.users:
                _delete_constant(graph, constant)
        replaced += 1
    if replaced:
        graph.delete_all_unused_submodules()
        graph.graph.lint()
        graph.recompile()
        logger.info("%d MatMul nodes of the converted graph are nn.Linear layers", replaced)
    return replaced


def _calls(graph: fx.GraphModule, node: fx.Node, class_name: str) -> bool:
    return node.op == "call_module" and type(graph.get_submodule(str(node.target))).__name__ == (
        class_name
    )


def _constant(graph: fx.GraphModule, node: object) -> torch.Tensor | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = functools.reduce(getattr, str(node.target).split("."), graph)
    return value if isinstance(value, torch.Tensor) else None


def _bias_add(
    graph: fx.GraphModule, node: fx.Node, features: int
) -> tuple[fx.Node, torch.Tensor] | None:
    """The ``Add`` of a constant (features,) bias that is ``node``'s only user, and the bias."""
    users = list(node.users)
    if len(users) != 1 or not _calls(graph, users[0], "OnnxBinaryMathOperation"):
        return None
    add = users[0]
    operation = graph.get_submodule(str(add.target))
    if getattr(operation, "math_op_function", None) is not torch.add or len(add.args) != 2:
        return None
    if getattr(operation, "broadcast", None) is not None:
        return None
    other = add.args[1] if add.args[0] is node else add.args[0]
    bias = _constant(graph, other)
    if bias is None or tuple(bias.shape) != (features,) or not bias.is_floating_point():
        return None
    return add, bias


def _delete_constant(graph: fx.GraphModule, node: fx.Node) -> None:
    owner_path, _, name = str(node.target).rpartition(".")
    owner = graph.get_submodule(owner_path) if owner_path else graph
    graph.graph.erase_node(node)
    if hasattr(owner, name):
        delattr(owner, name)
