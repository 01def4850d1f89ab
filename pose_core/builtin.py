"""The built-in model ``blazepose-full``: MediaPipe's BlazePose, as files ready to store.

:func:`build_blazepose_bundle` imports the two ``.tflite`` files of the mediapipe wheel
(:func:`pose_core.assets.ensure_blazepose_assets`) and writes, into one folder:

- ``landmark.onnx`` (role ``model``): input (N, 3, 256, 256) RGB in [0, 1]; outputs
  ``landmarks`` (N, 195), ``presence`` (N, 1) and ``heatmap`` (N, 64, 64, 39), the heatmap
  being used by :class:`~pose_core.inference.landmarks.BlazePoseLandmarkModel` to refine
  landmarks as MediaPipe does;
- ``detector.onnx`` (role ``detector``): input (N, 3, 224, 224) RGB in [-1, 1];
- ``recipe.json`` + ``weights.safetensors`` (roles ``recipe``, ``weights``): the landmark
  :class:`~pose_core.models.graph.GraphModel` that compression jobs load.

Its :data:`manifest <BLAZEPOSE_MANIFEST>` is what the serving side reads to pick the
decoding (``kind``). Nothing heavy is imported at module import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pose_core.manifest_kinds import KIND_BLAZEPOSE
from pose_core.roles import ROLE_DETECTOR, ROLE_MODEL, ROLE_RECIPE, ROLE_WEIGHTS

logger = logging.getLogger(__name__)

BUILTIN_MODEL_NAME = "blazepose-full"
LANDMARK_OUTPUTS = ("landmarks", "presence", "heatmap")
LANDMARK_INPUT_SHAPE = (1, 3, 256, 256)
DETECTOR_INPUT_SHAPE = (1, 3, 224, 224)


BLAZEPOSE_MANIFEST: dict[str, Any] = {
    "kind": KIND_BLAZEPOSE,
    "architecture": BUILTIN_MODEL_NAME,
    "input": {
        "size": [256, 256],
        "layout": "NCHW",
        "channel_order": "rgb",
        "range": [0.0, 1.0],
    },
    "outputs": list(LANDMARK_OUTPUTS),
    "detector": {"input": {"size": [224, 224], "layout": "NCHW", "range": [-1.0, 1.0]}},
    "keypoints": "coco17",
    "source": "mediapipe==0.10.21 pose_landmark_full.tflite + pose_detection.tflite",
    "license": "Apache-2.0",
}


@dataclass(frozen=True)
class BlazePoseBundle:
    """Files of the built-in model, by artifact role, and its manifest."""

    artifacts: dict[str, Path]
    manifest: dict[str, Any] = field(default_factory=lambda: dict(BLAZEPOSE_MANIFEST))
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per step (``assets``, ``import``, ``export``)."""


def build_blazepose_bundle(asset_dir: Path, out_dir: Path) -> BlazePoseBundle:
    """Write the built-in model's files into ``out_dir``.

    Args:
        asset_dir: cache of the mediapipe ``.tflite`` files (or of the wheel).
        out_dir: an empty or new folder.

    Raises:
        pose_core.assets.AssetUnavailableError: the mediapipe files cannot be obtained.
        pose_core.export.OnnxExportError: export failed.
    """
    from pose_core.assets import ensure_blazepose_assets
    from pose_core.export import export_onnx
    from pose_core.importers.tflite import import_blazepose_detector, import_blazepose_landmark
    from pose_core.models.graph import save_graph_model

    timings: dict[str, float] = {}
    start = time.perf_counter()
    assets = ensure_blazepose_assets(asset_dir)
    timings["assets"] = time.perf_counter() - start

    start = time.perf_counter()
    landmark = import_blazepose_landmark(assets.landmark_tflite, outputs=LANDMARK_OUTPUTS)
    detector = import_blazepose_detector(assets.detector_tflite)
    timings["import"] = time.perf_counter() - start

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    landmark_onnx = export_onnx(landmark, out_dir / "landmark.onnx", LANDMARK_INPUT_SHAPE)
    detector_onnx = export_onnx(detector, out_dir / "detector.onnx", DETECTOR_INPUT_SHAPE)
    recipe, weights = save_graph_model(landmark, out_dir)
    timings["export"] = time.perf_counter() - start
    logger.info(
        "built %s in %s",
        BUILTIN_MODEL_NAME,
        ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
    )
    return BlazePoseBundle(
        artifacts={
            ROLE_MODEL: landmark_onnx,
            ROLE_DETECTOR: detector_onnx,
            ROLE_RECIPE: recipe,
            ROLE_WEIGHTS: weights,
        },
        timings=timings,
    )


def blazepose_manifest(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of :data:`BLAZEPOSE_MANIFEST` with ``overrides`` merged in (top level)."""
    return {**BLAZEPOSE_MANIFEST, **dict(overrides or {})}
