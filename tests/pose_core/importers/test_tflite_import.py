"""The TFLite importer reproduces MediaPipe's own runtime (LiteRT) on real photo crops."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from pose_core.importers.tflite import (
    TfliteImportError,
    import_blazepose_detector,
    import_blazepose_landmark,
    import_tflite,
)
from pose_core.models.layers import DepthToSpace

logger = logging.getLogger(__name__)

LANDMARK_TOLERANCE_PX = 0.01


def _litert_outputs(path, batch_nhwc: np.ndarray,
                    reference_kernels: bool = False) -> dict[str, np.ndarray]:
    """Run LiteRT image by image; outputs keyed by TFLite output name, stacked over the batch.

    Default: MediaPipe's runtime setting (XNNPACK); ``reference_kernels``: LiteRT's reference
    kernels (slower, closer to exact arithmetic).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.BUILTIN_REF if reference_kernels
                else OpResolverType.AUTO)
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    results: dict[str, list[np.ndarray]] = {o["name"]: [] for o in outputs}
    for image in batch_nhwc:
        interpreter.set_tensor(input_detail["index"], image[None].astype(np.float32))
        interpreter.invoke()
        for o in outputs:
            results[o["name"]].append(interpreter.get_tensor(o["index"])[0].copy())
    return {name: np.stack(values) for name, values in results.items()}


def _run(model: nn.Module, batch_nchw: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        return tuple(t.numpy() for t in model(torch.from_numpy(batch_nchw)))


@pytest.fixture(scope="module")
def landmark_reference(blazepose_assets, landmark_photo_crops):
    return _litert_outputs(blazepose_assets.landmark_tflite,
                           landmark_photo_crops.transpose(0, 2, 3, 1))


def test_landmark_model_matches_litert_on_photo_crops(blazepose_landmark_model,
                                                      landmark_photo_crops, landmark_reference):
    landmarks, presence = _run(blazepose_landmark_model, landmark_photo_crops)
    assert landmarks.shape == (len(landmark_photo_crops), 195)
    assert presence.shape == (len(landmark_photo_crops), 1)
    reference_landmarks = landmark_reference["Identity"]
    reference_presence = landmark_reference["Identity_1"]
    # 39 x (x, y, z, visibility logit, presence logit); x and y are input pixels
    diff = np.abs(landmarks - reference_landmarks).reshape(-1, 39, 5).max(axis=(0, 1))
    logger.info("max |torch - LiteRT(XNNPACK)| over %d crops: x %.2e y %.2e z %.2e "
                "visibility %.2e presence-logit %.2e; presence %.2e", len(landmarks), *diff,
                np.abs(presence - reference_presence).max())
    assert diff[:2].max() <= LANDMARK_TOLERANCE_PX
    # XNNPACK itself is ~0.015 off a float64 run on z: allow its own noise on the other columns
    assert diff[2:].max() <= 0.03
    assert np.abs(presence - reference_presence).max() <= 1e-4
    # the crops hold people: the comparison is not between two degenerate outputs
    assert (reference_presence > 0.5).sum() >= 3
    assert np.ptp(reference_landmarks.reshape(-1, 39, 5)[..., 0], axis=1).min() > 5.0


def test_landmark_model_matches_litert_reference_kernels(blazepose_assets,
                                                         blazepose_landmark_model,
                                                         landmark_photo_crops):
    crops = landmark_photo_crops[:4]
    reference = _litert_outputs(blazepose_assets.landmark_tflite, crops.transpose(0, 2, 3, 1),
                                reference_kernels=True)
    landmarks, presence = _run(blazepose_landmark_model, crops)
    diff = np.abs(landmarks - reference["Identity"]).max()
    logger.info("max |torch - LiteRT(reference kernels)| over all 195 values: %.2e", diff)
    assert diff <= LANDMARK_TOLERANCE_PX
    assert np.abs(presence - reference["Identity_1"]).max() <= 1e-4


def test_optional_landmark_outputs_match_litert(blazepose_assets, landmark_photo_crops,
                                                landmark_reference):
    model = import_tflite(blazepose_assets.landmark_tflite,
                          ["heatmap", "world_landmarks", "presence"])
    assert model.output_names == ("heatmap", "world_landmarks", "presence")
    heatmap, world, presence = _run(model, landmark_photo_crops[:3])
    assert heatmap.shape == (3, 64, 64, 39)
    np.testing.assert_allclose(heatmap, landmark_reference["Identity_3"][:3], atol=2e-3)
    np.testing.assert_allclose(world, landmark_reference["Identity_4"][:3], atol=1e-4)
    np.testing.assert_allclose(presence, landmark_reference["Identity_1"][:3], atol=1e-4)


def test_detector_matches_litert_on_photos(blazepose_assets, blazepose_detector_model,
                                           detector_photo_inputs):
    regressors, scores = _run(blazepose_detector_model, detector_photo_inputs)
    reference = _litert_outputs(blazepose_assets.detector_tflite,
                                detector_photo_inputs.transpose(0, 2, 3, 1))
    n = len(detector_photo_inputs)
    assert regressors.shape == (n, 2254, 12)
    assert scores.shape == (n, 2254, 1)
    regressor_diff = np.abs(regressors - reference["Identity"]).max()
    score_diff = np.abs(scores - reference["Identity_1"]).max()
    logger.info("detector max |torch - LiteRT|: regressors %.2e px, score logits %.2e",
                regressor_diff, score_diff)
    assert regressor_diff <= 0.01
    assert score_diff <= 0.01
    # the best anchors agree, and the photos contain confident detections
    assert (np.argmax(scores[:, :, 0], axis=1)
            == np.argmax(reference["Identity_1"][:, :, 0], axis=1)).all()
    assert (reference["Identity_1"].max(axis=(1, 2)) > 0).sum() >= 3


def test_batch_results_equal_single_image_results(blazepose_landmark_model,
                                                  landmark_photo_crops):
    batch = _run(blazepose_landmark_model, landmark_photo_crops[:2])
    for i in range(2):
        single = _run(blazepose_landmark_model, landmark_photo_crops[i:i + 1])
        for got, want in zip(batch, single, strict=True):
            np.testing.assert_allclose(got[i:i + 1], want, atol=1e-3)


def test_layers_are_real_convolutions(blazepose_landmark_model):
    convs = {name: m for name, m in blazepose_landmark_model.named_modules()
             if isinstance(m, nn.Conv2d)}
    assert len(convs) >= 50
    depthwise = [m for m in convs.values() if m.groups > 1]
    assert depthwise
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert all(getattr(blazepose_landmark_model, name) is m for name, m in convs.items())
    first = convs[min(convs, key=lambda n: int(n.split("_")[-1]))]
    assert (first.in_channels, first.weight.dtype) == (3, torch.float32)


def test_unrequested_branches_are_dropped(blazepose_assets, blazepose_landmark_model):
    with_segmentation = import_tflite(blazepose_assets.landmark_tflite,
                                      ["landmarks", "presence", "segmentation"])

    def n_convs(model: nn.Module) -> int:
        return sum(isinstance(m, nn.Conv2d) for m in model.modules())

    assert n_convs(blazepose_landmark_model) < n_convs(with_segmentation) - 10
    assert all(o.op != "resize_bilinear" or o.params["size"][0] < 256
               for o in blazepose_landmark_model.nodes)


def test_outputs_are_selected_by_short_or_tflite_name(blazepose_assets):
    model = import_tflite(blazepose_assets.landmark_tflite, ["Identity_1"])
    assert model.output_names == ("presence",)
    assert model.input_spec["shape"] == [3, 256, 256]
    assert model.input_spec["range"] == [0.0, 1.0]


def test_bad_inputs_raise_clear_errors(blazepose_assets, tmp_path):
    with pytest.raises(TfliteImportError, match="bad output selection"):
        import_tflite(blazepose_assets.landmark_tflite, ["no_such_output"])
    with pytest.raises(TfliteImportError, match="same output twice"):
        import_tflite(blazepose_assets.landmark_tflite, ["presence", "Identity_1"])
    with pytest.raises(TfliteImportError, match="not a blazepose_landmark"):
        import_blazepose_landmark(blazepose_assets.detector_tflite)
    not_tflite = tmp_path / "junk.tflite"
    not_tflite.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(TfliteImportError):
        import_tflite(not_tflite)


def test_detector_defaults_and_input_spec(blazepose_detector_model):
    assert blazepose_detector_model.output_names == ("regressors", "scores")
    assert blazepose_detector_model.input_spec["shape"] == [3, 224, 224]
    assert blazepose_detector_model.input_spec["range"] == [-1.0, 1.0]


def test_depth_to_space_uses_tflite_dcr_order():
    block, c_out, h, w = 2, 3, 2, 2
    nhwc = np.arange(h * w * block * block * c_out, dtype=np.float32).reshape(
        1, h, w, block * block * c_out)
    # TensorFlow: out[h*b + i, w*b + j, c] = in[h, w, (i*b + j)*C_out + c]
    expected = np.zeros((1, h * block, w * block, c_out), dtype=np.float32)
    for y in range(h):
        for x in range(w):
            for i in range(block):
                for j in range(block):
                    expected[0, y * block + i, x * block + j] = nhwc[
                        0, y, x, (i * block + j) * c_out:(i * block + j + 1) * c_out]
    got = DepthToSpace(block)(torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), expected)
    shuffled = nn.PixelShuffle(block)(torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    assert not np.array_equal(shuffled.permute(0, 2, 3, 1).numpy(), expected)


def test_detector_import_is_separate_from_landmark_import(blazepose_assets):
    with pytest.raises(TfliteImportError, match="not a blazepose_detector"):
        import_blazepose_detector(blazepose_assets.landmark_tflite)
