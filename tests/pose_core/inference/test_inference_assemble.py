"""A manifest + runners -> the keypoint model / pipeline its ``kind`` names."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pose_core.inference.assemble import ManifestError, keypoint_model, pose_pipeline
from pose_core.inference.heatmap import HeatmapModel
from pose_core.inference.landmarks import BlazePoseLandmarkModel


def zero_heatmaps(batch: np.ndarray) -> Sequence[np.ndarray]:
    """A runner: (N, 3, H, W) -> (N, 17, H/4, W/4) zeros."""
    n, _, h, w = batch.shape
    return [np.zeros((n, 17, h // 4, w // 4), np.float32)]


def test_the_manifest_kind_picks_the_decoding() -> None:
    assert isinstance(keypoint_model({"kind": "blazepose"}, zero_heatmaps), BlazePoseLandmarkModel)
    model = keypoint_model(
        {"kind": "heatmap", "input_size": [256, 192], "channel_order": "bgr"}, zero_heatmaps
    )
    assert isinstance(model, HeatmapModel)
    assert model.input_size == (192, 256) and model.channel_order == "bgr"
    assert model.runner is zero_heatmaps


def test_a_pipeline_keeps_its_detector_or_none() -> None:
    manifest = {"kind": "heatmap", "input_size": [64, 48]}
    with_detector = pose_pipeline(manifest, zero_heatmaps, zero_heatmaps)
    assert isinstance(with_detector.landmark, HeatmapModel)
    assert with_detector.detector is zero_heatmaps
    assert pose_pipeline(manifest, zero_heatmaps, None).detector is None


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({}, "kind None"),
        ({"kind": "segmentation"}, "'segmentation'"),
        ({"kind": "heatmap"}, "bad heatmap manifest"),
        ({"kind": "heatmap", "input_size": [64, 48], "mean": [0.5]}, "bad heatmap manifest"),
    ],
)
def test_unusable_manifests_are_refused(manifest: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        keypoint_model(manifest, zero_heatmaps)
