"""GraphModel recipes: pickle-free round trips that follow pruning and layer replacement."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from pose_core.models.graph import (
    RECIPE_FILE,
    WEIGHTS_FILE,
    GraphModel,
    GraphOutput,
    GraphRecipeError,
    Node,
    load_graph_model,
    save_graph_model,
)
from pose_core.models.layers import ChannelPad


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(x)


def _rebuild(model: GraphModel) -> GraphModel:
    """Recipe through JSON text + state_dict, as a store would do it."""
    recipe = json.loads(json.dumps(model.recipe()))
    return GraphModel.from_recipe(recipe, model.state_dict())


@pytest.fixture
def crops(landmark_photo_crops) -> torch.Tensor:
    """One real person crop (1, 3, 256, 256)."""
    return torch.from_numpy(landmark_photo_crops[:1])


def test_save_and_load_give_identical_outputs(blazepose_landmark_model, landmark_photo_crops,
                                              tmp_path):
    crops = torch.from_numpy(landmark_photo_crops[:2])
    files = save_graph_model(blazepose_landmark_model, tmp_path / "model")
    assert sorted(p.name for p in files) == sorted([RECIPE_FILE, WEIGHTS_FILE])
    recipe = json.loads((tmp_path / "model" / RECIPE_FILE).read_text())
    assert recipe["input_spec"]["shape"] == [3, 256, 256]
    assert recipe["input_spec"]["range"] == [0.0, 1.0]
    assert recipe["input_spec"]["output_names"] == ["landmarks", "presence"]
    loaded = load_graph_model(tmp_path / "model")
    assert loaded.output_names == blazepose_landmark_model.output_names
    for got, want in zip(_outputs(loaded, crops), _outputs(blazepose_landmark_model, crops),
                         strict=True):
        assert torch.equal(got, want)


def test_weights_file_is_safetensors_not_pickle(blazepose_landmark_model, tmp_path):
    save_graph_model(blazepose_landmark_model, tmp_path)
    raw = (tmp_path / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert "conv_3.weight" in header
    assert raw[:2] != b"\x80\x02"  # not a pickle protocol header


def _expand_depthwise_project(model: GraphModel) -> tuple[str, str, str]:
    """Names of a 1x1 expansion conv -> depthwise conv -> 1x1 projection chain."""
    producers = {node.output: node for node in model.nodes}
    consumers: dict[str, list[Node]] = {}
    for node in model.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)
    for node in model.nodes:
        layer = model.get_submodule(node.module) if node.module else None
        if not isinstance(layer, nn.Conv2d) or layer.groups == 1:
            continue
        expand = producers.get(node.inputs[0])
        users = consumers.get(node.output, [])
        if (expand is None or expand.op != "conv" or len(consumers[expand.output]) != 1
                or len(users) != 1 or users[0].op != "conv"):
            continue
        assert expand.module is not None and users[0].module is not None
        expand_layer = model.get_submodule(expand.module)
        project_layer = model.get_submodule(users[0].module)
        if expand_layer.groups == 1 and project_layer.groups == 1:
            return expand.module, node.module or "", users[0].module
    raise AssertionError("no expansion/depthwise/projection chain found")


def _keep_output_channels(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    """Shrink a conv in place as torch-pruning does (attributes and parameters)."""
    conv.weight = nn.Parameter(conv.weight.data[keep].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.data[keep].clone())
    conv.out_channels = len(keep)
    if conv.groups > 1:
        conv.groups = conv.in_channels = len(keep)


def test_recipe_follows_channel_pruning(blazepose_landmark_model, crops):
    pruned = copy.deepcopy(blazepose_landmark_model)
    expand_name, depthwise_name, project_name = _expand_depthwise_project(pruned)
    expand, depthwise, project = (pruned.get_submodule(n)
                                  for n in (expand_name, depthwise_name, project_name))
    keep = torch.arange(0, expand.out_channels, 2)
    _keep_output_channels(expand, keep)
    _keep_output_channels(depthwise, keep)
    project.weight = nn.Parameter(project.weight.data[:, keep].clone())
    project.in_channels = len(keep)

    recipe = pruned.recipe()
    assert recipe["modules"][expand_name]["out_channels"] == len(keep)
    assert recipe["modules"][depthwise_name]["groups"] == len(keep)
    assert recipe["modules"][project_name]["in_channels"] == len(keep)
    rebuilt = _rebuild(pruned)
    pruned_out = _outputs(pruned, crops)
    for got, want in zip(_outputs(rebuilt, crops), pruned_out, strict=True):
        assert torch.equal(got, want)
    original = _outputs(blazepose_landmark_model, crops)[0]
    assert not torch.allclose(pruned_out[0], original)
    with pytest.raises(GraphRecipeError, match="weights do not match"):
        GraphModel.from_recipe(recipe, blazepose_landmark_model.state_dict())


def test_recipe_follows_conv_replaced_by_sequential(blazepose_landmark_model, crops):
    factored = copy.deepcopy(blazepose_landmark_model)
    _, _, project_name = _expand_depthwise_project(factored)
    conv = factored.get_submodule(project_name)
    matrix = conv.weight.data[:, :, 0, 0]
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = len(s)  # full rank: the factorization must not change the outputs
    first = nn.Conv2d(conv.in_channels, rank, 1, bias=False)
    second = nn.Conv2d(rank, conv.out_channels, 1, bias=True)
    first.weight.data = (torch.diag(s) @ vh)[:, :, None, None].contiguous()
    second.weight.data = u[:, :, None, None].contiguous()
    assert conv.bias is not None
    second.bias.data = conv.bias.data.clone()
    setattr(factored, project_name, nn.Sequential(first, second))

    spec = factored.recipe()["modules"][project_name]
    assert spec["type"] == "Sequential"
    assert [child[1]["out_channels"] for child in spec["children"]] == [rank, conv.out_channels]
    factored_out = _outputs(factored, crops)
    rebuilt = _rebuild(factored)
    assert isinstance(rebuilt.get_submodule(project_name), nn.Sequential)
    for got, want in zip(_outputs(rebuilt, crops), factored_out, strict=True):
        assert torch.equal(got, want)
    original = _outputs(blazepose_landmark_model, crops)[0]
    assert (factored_out[0] - original).abs().max() < 0.05


def _shortcut_graph() -> GraphModel:
    """conv(3 -> 8) + channel-padded shortcut of the input (3 -> 8 channels), then ReLU6."""
    torch.manual_seed(0)
    layers = {"conv_a": nn.Conv2d(3, 8, 3, padding=1), "pad_a": ChannelPad(0, 5)}
    nodes = [
        Node("conv", ("input",), "t1", "conv_a", {"activation": None}),
        Node("channel_pad", ("input",), "t2", "pad_a"),
        Node("add", ("t1", "t2"), "t3", params={"activation": "relu6"}),
        Node("reshape", ("t3",), "t4", params={"shape": [1, -1, 8]}),
    ]
    outputs = [GraphOutput("features", "t3"), GraphOutput("flat", "t4")]
    spec = {"name": "input", "shape": [3, 8, 8], "layout": "NCHW", "range": [0.0, 1.0]}
    return GraphModel(layers, nodes, outputs, spec).eval()


def test_channel_pad_graph_computes_padded_shortcut_and_round_trips():
    model = _shortcut_graph()
    x = torch.rand(2, 3, 8, 8)
    features, flat = _outputs(model, x)
    conv = model.get_submodule("conv_a")
    with torch.no_grad():
        expected = conv(x)
    expected[:, :3] += x
    assert torch.allclose(features, expected.clamp(0, 6))
    # reshape reads NHWC order, like TFLite
    assert torch.equal(flat, features.permute(0, 2, 3, 1).reshape(2, -1, 8))
    rebuilt = _rebuild(model)
    for got, want in zip(_outputs(rebuilt, x), (features, flat), strict=True):
        assert torch.equal(got, want)


def test_recipe_reads_channel_pad_amounts_from_the_live_module():
    model = _shortcut_graph()
    # a pruner that drops 2 output channels of conv_a also drops 2 padded channels
    conv, pad = model.get_submodule("conv_a"), model.get_submodule("pad_a")
    _keep_output_channels(conv, torch.arange(6))
    pad.after = 3
    model.nodes[3] = Node("reshape", ("t3",), "t4", params={"shape": [1, -1, 6]})
    assert model.recipe()["modules"]["pad_a"] == {"type": "ChannelPad", "before": 0, "after": 3}
    rebuilt = _rebuild(model)
    x = torch.rand(1, 3, 8, 8)
    assert _outputs(rebuilt, x)[0].shape == (1, 6, 8, 8)


def test_bad_recipes_are_rejected(blazepose_landmark_model):
    recipe = blazepose_landmark_model.recipe()
    with pytest.raises(GraphRecipeError, match="format"):
        GraphModel.from_recipe({**recipe, "format": "other"})
    broken = copy.deepcopy(recipe)
    broken["nodes"][0]["inputs"] = ["nowhere"]
    with pytest.raises(GraphRecipeError, match="undefined"):
        GraphModel.from_recipe(broken)
    unknown_op = copy.deepcopy(recipe)
    unknown_op["nodes"][0]["op"] = "fft"
    with pytest.raises(GraphRecipeError, match="unknown op"):
        GraphModel.from_recipe(unknown_op)


def test_detector_round_trip_keeps_depth_to_space(blazepose_detector_model,
                                                  detector_photo_inputs, tmp_path):
    save_graph_model(blazepose_detector_model, tmp_path)
    loaded = load_graph_model(tmp_path)
    x = torch.from_numpy(detector_photo_inputs[:2])
    for got, want in zip(_outputs(loaded, x), _outputs(blazepose_detector_model, x),
                         strict=True):
        assert torch.equal(got, want)
    types = {spec["type"] for spec in loaded.recipe()["modules"].values()}
    assert types == {"Conv2d", "DepthToSpace"}


@pytest.mark.slow
def test_recipe_survives_torch_pruning(blazepose_landmark_model, crops):
    import torch_pruning as tp

    pruned = copy.deepcopy(blazepose_landmark_model)
    heads = [m for name, m in pruned.named_modules()
             if isinstance(m, nn.Conv2d) and m.out_channels in (195, 1)]
    pruner = tp.pruner.MagnitudePruner(
        pruned, crops[:1], importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.3, ignored_layers=heads,
        output_transform=lambda outs: sum(o.sum() for o in outs))
    pruner.step()
    params = sum(p.numel() for p in pruned.parameters())
    assert params < 0.8 * sum(p.numel() for p in blazepose_landmark_model.parameters())
    rebuilt = _rebuild(pruned)
    for got, want in zip(_outputs(rebuilt, crops), _outputs(pruned, crops), strict=True):
        assert torch.equal(got, want)
    assert np.isfinite(_outputs(rebuilt, crops)[0].numpy()).all()
