"""Importer paths the BlazePose files do not exercise, checked against LiteRT on tiny models:
channel PAD (a ChannelPad layer), SAME max-pool, CONCATENATION, padding folded into convs,
unsupported ops and quantized models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tflite_tiny as tt
import torch

from pose_core.importers.tflite import TfliteImportError, import_tflite
from pose_core.models.graph import GraphModel
from pose_core.models.layers import ChannelPad


def _everything_model(path: Path) -> Path:
    """input (1, 8, 8, 3) -> outputs flat (1, 256), prob (1, 4, 4, 2), extra (1, 8, 8, 4)."""
    rng = np.random.default_rng(0)
    t = tt.TinyTflite()
    x = t.tensor((1, 8, 8, 3), name="input_1")

    def weights(shape, half=False):
        values = rng.normal(size=shape)
        if not half:
            return t.tensor(shape, data=values)
        stored = t.tensor(shape, tt.FLOAT16, values)
        out = t.tensor(shape)
        t.op(tt.DEQUANTIZE, [stored], [out])
        return out

    a = t.tensor((1, 8, 8, 8))
    t.op(tt.CONV_2D, [x, weights((8, 3, 3, 3), half=True), weights((8,))], [a],
         tt.CONV_OPTIONS, tt.conv_options(tt.SAME, 1, tt.RELU6))
    channel_pads = t.tensor((4, 2), tt.INT32, np.array([[0, 0], [0, 0], [0, 0], [2, 3]]))
    p = t.tensor((1, 8, 8, 8))
    t.op(tt.PAD, [x, channel_pads], [p], tt.PAD_OPTIONS, tt.empty_options())
    s = t.tensor((1, 8, 8, 8))
    t.op(tt.ADD, [a, p], [s], tt.ADD_OPTIONS, tt.add_options(tt.NONE))
    d = t.tensor((1, 4, 4, 8))
    t.op(tt.DEPTHWISE_CONV_2D, [s, weights((1, 3, 3, 8)), weights((8,))], [d],
         tt.DEPTHWISE_OPTIONS, tt.depthwise_options(tt.SAME, 2, tt.RELU))
    m = t.tensor((1, 4, 4, 8))
    t.op(tt.MAX_POOL_2D, [s], [m], tt.POOL_OPTIONS, tt.pool_options(tt.SAME, 2, 3))
    c = t.tensor((1, 4, 4, 16))
    t.op(tt.CONCATENATION, [d, m], [c], tt.CONCAT_OPTIONS, tt.concat_options(3))
    new_shape = t.tensor((2,), tt.INT32, np.array([-1, 256]))
    flat = t.tensor((1, 256), name="flat")
    t.op(tt.RESHAPE, [c, new_shape], [flat])
    spatial_pads = t.tensor((4, 2), tt.INT32, np.array([[0, 0], [1, 1], [1, 1], [0, 0]]))
    mp = t.tensor((1, 6, 6, 8))
    t.op(tt.PAD, [m, spatial_pads], [mp], tt.PAD_OPTIONS, tt.empty_options())
    logits = t.tensor((1, 4, 4, 2))
    t.op(tt.CONV_2D, [mp, weights((2, 3, 3, 8)), weights((2,))], [logits],
         tt.CONV_OPTIONS, tt.conv_options(tt.VALID, 1, tt.NONE))
    prob = t.tensor((1, 4, 4, 2), name="prob")
    t.op(tt.LOGISTIC, [logits], [prob])
    extra = t.tensor((1, 8, 8, 4), name="extra")
    t.op(tt.CONV_2D, [x, weights((4, 1, 1, 3)), weights((4,))], [extra],
         tt.CONV_OPTIONS, tt.conv_options(tt.VALID, 1, tt.NONE))
    path.write_bytes(t.build([x], [flat, prob, extra]))
    return path


def _litert(path: Path, images_nhwc: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    results = []
    for image in images_nhwc:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        results.append([interpreter.get_tensor(o["index"])[0].copy()
                        for o in interpreter.get_output_details()])
    return [np.stack(values) for values in zip(*results, strict=True)]


@pytest.fixture
def everything(tmp_path) -> Path:
    return _everything_model(tmp_path / "everything.tflite")


def test_synthetic_model_matches_litert(everything):
    images = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype(np.float32)
    model = import_tflite(everything)
    assert model.output_names == ("flat", "prob", "extra")
    assert model.input_spec["range"] is None  # unknown family: no claim about the range
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        got = [t.numpy() for t in model(x)]
    for mine, reference in zip(got, _litert(everything, images), strict=True):
        assert mine.shape == reference.shape  # 4-D outputs keep TFLite's NHWC layout
        np.testing.assert_allclose(mine, reference, atol=1e-5)


def test_channel_pad_becomes_a_layer_and_spatial_pads_fold(everything):
    model = import_tflite(everything)
    pads = [m for m in model.modules() if isinstance(m, ChannelPad)]
    assert [(p.before, p.after) for p in pads] == [(2, 3)]
    assert all(node.op != "pad" for node in model.nodes)  # folded into the VALID conv
    folded = [m for m in model.modules()
              if isinstance(m, torch.nn.Conv2d) and m.out_channels == 2]
    assert folded[0].padding == (1, 1)
    asymmetric = [n for n in model.nodes if n.params.get("pad") == [0, 1, 0, 1]]
    assert {n.op for n in asymmetric} == {"conv", "max_pool"}
    rebuilt = GraphModel.from_recipe(model.recipe(), model.state_dict())
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        for a, b in zip(rebuilt(x), model(x), strict=True):
            assert torch.equal(a, b)


def test_selected_outputs_drop_other_branches(everything):
    extra_only = import_tflite(everything, ["extra"])
    assert extra_only.output_names == ("extra",)
    assert not any(isinstance(m, ChannelPad) for m in extra_only.modules())
    assert [m.out_channels for m in extra_only.modules()
            if isinstance(m, torch.nn.Conv2d)] == [4]
    prob_only = import_tflite(everything, ["prob"])
    convs = [m for m in prob_only.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(c.out_channels for c in convs) == [2, 8]  # no depthwise: it feeds flat only
    assert all(node.op not in ("concat", "reshape") for node in prob_only.nodes)


def test_odd_sizes_dilation_and_depth_multiplier_match_litert(tmp_path):
    """SAME padding on odd sizes (stride 2), dilated SAME conv, depthwise multiplier 2."""
    rng = np.random.default_rng(2)
    t = tt.TinyTflite()
    x = t.tensor((1, 7, 9, 3), name="input_1")
    a = t.tensor((1, 4, 5, 4))
    t.op(tt.CONV_2D, [x, t.tensor((4, 3, 3, 3), data=rng.normal(size=(4, 3, 3, 3))),
                      t.tensor((4,), data=rng.normal(size=4))], [a],
         tt.CONV_OPTIONS, tt.conv_options(tt.SAME, 2, tt.RELU))
    b = t.tensor((1, 4, 5, 8))
    t.op(tt.DEPTHWISE_CONV_2D, [a, t.tensor((1, 3, 3, 8), data=rng.normal(size=(1, 3, 3, 8))),
                                t.tensor((8,), data=rng.normal(size=8))], [b],
         tt.DEPTHWISE_OPTIONS, tt.depthwise_options(tt.SAME, 1, tt.NONE, multiplier=2))
    c = t.tensor((1, 4, 5, 2), name="out")
    t.op(tt.CONV_2D, [b, t.tensor((2, 3, 3, 8), data=rng.normal(size=(2, 3, 3, 8))),
                      t.tensor((2,), data=rng.normal(size=2))], [c],
         tt.CONV_OPTIONS, tt.conv_options(tt.SAME, 1, tt.NONE, dilation=2))
    path = tmp_path / "odd.tflite"
    path.write_bytes(t.build([x], [c]))
    images = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    model = import_tflite(path)
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [(m.in_channels, m.out_channels, m.groups) for m in depthwise] == [(4, 8, 4)]
    with torch.no_grad():
        (got,) = model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    (reference,) = _litert(path, images)
    np.testing.assert_allclose(got.numpy(), reference, atol=1e-4)


def test_unsupported_op_is_named(tmp_path):
    t = tt.TinyTflite()
    x = t.tensor((1, 4, 4, 3))
    y = t.tensor((1, 4, 4, 3))
    t.op(tt.TANH, [x], [y])
    path = tmp_path / "tanh.tflite"
    path.write_bytes(t.build([x], [y]))
    with pytest.raises(TfliteImportError, match="unsupported TFLite op TANH"):
        import_tflite(path)


def test_quantized_models_are_rejected(tmp_path):
    t = tt.TinyTflite()
    x = t.tensor((1, 4, 4, 3), tt.INT8)
    w = t.tensor((2, 1, 1, 3), tt.INT8, np.ones((2, 1, 1, 3)))
    y = t.tensor((1, 4, 4, 2), tt.INT8)
    t.op(tt.CONV_2D, [x, w], [y], tt.CONV_OPTIONS, tt.conv_options(tt.VALID, 1, tt.NONE))
    path = tmp_path / "int8.tflite"
    path.write_bytes(t.build([x], [y]))
    with pytest.raises(TfliteImportError, match="float32"):
        import_tflite(path)
