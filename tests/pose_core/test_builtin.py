"""The built-in model bundle: ONNX graphs ONNX Runtime runs, and the recipe + weights that
compression jobs load give the same landmarks as the served ONNX graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serving_support import cached_bundle

from pose_core.builtin import BLAZEPOSE_MANIFEST, LANDMARK_OUTPUTS, BlazePoseBundle


@pytest.fixture(scope="module")
def bundle(blazepose_assets) -> BlazePoseBundle:
    return cached_bundle(blazepose_assets.landmark_tflite.parent)


def test_bundle_has_every_role(bundle: BlazePoseBundle) -> None:
    assert set(bundle.artifacts) == {"model", "detector", "recipe", "weights"}
    for path in bundle.artifacts.values():
        assert path.is_file() and path.stat().st_size > 0
    assert bundle.manifest["kind"] == "blazepose" and bundle.manifest["keypoints"] == "coco17"
    json.dumps(bundle.manifest)  # storable as JSON


def test_onnx_graphs_have_the_serving_signature(bundle: BlazePoseBundle) -> None:
    from pose_core.inference.runtime import OnnxRunner

    landmark = OnnxRunner(bundle.artifacts["model"])
    assert landmark.output_names == list(LANDMARK_OUTPUTS)
    outputs = landmark(np.zeros((2, 3, 256, 256), np.float32))
    assert [o.shape for o in outputs] == [(2, 195), (2, 1), (2, 64, 64, 39)]
    detector = OnnxRunner(bundle.artifacts["detector"])
    regressors, scores = detector(np.zeros((1, 3, 224, 224), np.float32))
    assert regressors.shape == (1, 2254, 12) and scores.shape == (1, 2254, 1)
    assert BLAZEPOSE_MANIFEST["input"]["size"] == [256, 256]


def test_recipe_and_weights_match_the_served_graph(
    bundle: BlazePoseBundle, landmark_photo_crops: np.ndarray
) -> None:
    import torch

    from pose_core.inference.runtime import OnnxRunner
    from pose_core.models.graph import load_graph_model

    folder = bundle.artifacts["recipe"].parent
    assert bundle.artifacts["weights"].parent == folder
    model = load_graph_model(folder)
    assert model.output_names == LANDMARK_OUTPUTS
    crops = landmark_photo_crops[:2]
    with torch.no_grad():
        expected = [t.numpy() for t in model(torch.from_numpy(crops))]
    served = OnnxRunner(bundle.artifacts["model"])(crops)
    np.testing.assert_allclose(served[0], expected[0], atol=0.05)  # landmarks, crop pixels
    np.testing.assert_allclose(served[1], expected[1], atol=1e-4)
