"""SimCC decoding: hand-made outputs with known argmax, the keypoint model on crops, and the
small SimCC network (random weights, see tests/simcc_support.py) through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from simcc_support import (
    INPUT_HW,
    SIMCC_MANIFEST,
    SPLIT_RATIO,
    expected_keypoints,
    export_simcc_onnx,
    spread_peaks,
    tiny_simcc,
)

from pose_core.inference.assemble import ManifestError, keypoint_model
from pose_core.inference.crop import CropRect
from pose_core.inference.heatmap import HeatmapModelError
from pose_core.inference.runtime import OnnxRunner
from pose_core.inference.simcc import SimccModel, decode_simcc


def test_decoding_takes_the_argmax_over_the_split_ratio_and_the_smaller_maximum() -> None:
    simcc_x = np.zeros((2, 3, 20), np.float32)
    simcc_y = np.zeros((2, 3, 30), np.float32)
    bins_x = np.array([[0, 7, 19], [3, 3, 11]])
    bins_y = np.array([[29, 1, 14], [0, 8, 5]])
    for n in range(2):
        for k in range(3):
            simcc_x[n, k, bins_x[n, k]] = 0.9 - 0.1 * k
            simcc_y[n, k, bins_y[n, k]] = 0.6 + 0.1 * n
    coords, scores = decode_simcc(simcc_x, simcc_y, split_ratio=2.0)
    np.testing.assert_allclose(coords[..., 0], bins_x / 2.0)
    np.testing.assert_allclose(coords[..., 1], bins_y / 2.0)
    expected = np.minimum(0.9 - 0.1 * np.arange(3)[None], 0.6 + 0.1 * np.arange(2)[:, None])
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    with pytest.raises(HeatmapModelError):
        decode_simcc(simcc_x, simcc_y[:1], 2.0)


def test_the_model_maps_bins_through_the_crop_to_image_pixels() -> None:
    height, width = INPUT_HW
    peak = np.array([30, 101])  # x bin, y bin: input pixel (15 + 0.5, 50.5 + 0.5)

    def runner(batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        x = np.zeros((n, 17, round(width * SPLIT_RATIO)), np.float32)
        y = np.zeros((n, 17, round(height * SPLIT_RATIO)), np.float32)
        x[..., peak[0]] = 1.0
        y[..., peak[1]] = 0.8
        return [y, x]  # outputs in the other order: output_order says which is which

    model = keypoint_model({**SIMCC_MANIFEST, "simcc_outputs": [1, 0]}, runner)
    assert isinstance(model, SimccModel)
    image = np.zeros((300, 400, 3), np.uint8)
    rects = [CropRect(200, 150, 120, 160), CropRect(100, 120, 90, 90, rotation=0.3)]
    people = model.estimate(image, rects)
    for person, rect in zip(people, rects, strict=True):
        expected = expected_keypoints(rect, peak[None])[0]
        np.testing.assert_allclose(person.keypoints[:, :2], [expected] * 17, atol=1e-3)
        np.testing.assert_allclose(person.keypoints[:, 2], 0.8, rtol=1e-6)


def test_the_small_simcc_network_decodes_its_constructed_peaks(tmp_path: Path) -> None:
    peaks = spread_peaks()
    onnx = export_simcc_onnx(tiny_simcc(peaks=peaks), tmp_path / "simcc.onnx")
    model = keypoint_model(SIMCC_MANIFEST, OnnxRunner(onnx, 1))
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    rect = CropRect(160, 120, 90, 130)
    (person,) = model.estimate(image, [rect])
    np.testing.assert_allclose(person.keypoints[:, :2], expected_keypoints(rect, peaks), atol=1e-3)


@pytest.mark.parametrize(
    "change",
    [{"simcc_split_ratio": 0}, {"simcc_split_ratio": "2"}, {"simcc_outputs": [0, 0]},
     {"input_size": None}],
)
def test_a_bad_simcc_manifest_is_a_manifest_error(change: dict) -> None:
    with pytest.raises(ManifestError, match="SimCC"):
        keypoint_model({**SIMCC_MANIFEST, **change}, lambda batch: [batch])
