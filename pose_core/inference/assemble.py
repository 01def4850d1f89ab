"""A version's manifest + ONNX runners -> the keypoint model / pose pipeline that runs it.

The manifest ``kind`` picks the decoding: ``blazepose`` (BlazePose landmark model),
``heatmap`` (top-down heatmap model, its fields read by
:func:`~pose_core.importers.uploads.heatmap_model_args`) or ``simcc`` (RTMPose-style,
:func:`~pose_core.importers.simcc_manifest.simcc_model_args`). Nothing here knows where the
runners come from (a store, files, a session cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pose_core.inference.keypoint_model import KeypointModel
from pose_core.inference.pipeline import PosePipeline
from pose_core.inference.types import Runner
from pose_core.manifest_kinds import KIND_BLAZEPOSE, KIND_HEATMAP, KIND_SIMCC


class ManifestError(ValueError):
    """The manifest does not describe a keypoint model this package can run."""


def keypoint_model(manifest: Mapping[str, Any], runner: Runner) -> KeypointModel:
    """The keypoint model of ``manifest["kind"]`` running on ``runner``.

    Raises:
        ManifestError: unknown ``kind`` or a malformed heatmap manifest.
    """
    kind = manifest.get("kind")
    if kind == KIND_BLAZEPOSE:
        from pose_core.inference.landmarks import BlazePoseLandmarkModel

        return BlazePoseLandmarkModel(runner)
    if kind == KIND_HEATMAP:
        from pose_core.importers.heatmap_manifest import heatmap_model_args
        from pose_core.importers.upload_info import UploadRejected
        from pose_core.inference.heatmap import HeatmapModel

        try:
            return HeatmapModel(runner, **heatmap_model_args(manifest))
        except UploadRejected as exc:
            raise ManifestError(f"bad heatmap manifest: {exc}") from exc
    if kind == KIND_SIMCC:
        from pose_core.importers.simcc_manifest import simcc_model_args
        from pose_core.importers.upload_info import UploadRejected
        from pose_core.inference.simcc import SimccModel

        try:
            return SimccModel(runner, **simcc_model_args(manifest))
        except UploadRejected as exc:
            raise ManifestError(f"bad SimCC manifest: {exc}") from exc
    raise ManifestError(f"no keypoint decoding for manifest kind {kind!r}")


def check_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise unless :func:`keypoint_model` can decode ``manifest``; nothing runs (the
    decoders check their fields when built and call their runner only to predict).

    Raises:
        ManifestError: see :func:`keypoint_model`.
    """
    keypoint_model(manifest, _not_run)


def _not_run(batch: Any) -> Any:
    raise AssertionError("check_manifest builds a decoder and never runs it")


def pose_pipeline(
    manifest: Mapping[str, Any], runner: Runner, detector: Runner | None
) -> PosePipeline:
    """Detector -> crops -> keypoint model; without ``detector`` only
    :meth:`~pose_core.inference.pipeline.PosePipeline.predict_in_rects` works.

    Raises:
        ManifestError: see :func:`keypoint_model`.
    """
    return PosePipeline(keypoint_model(manifest, runner), detector)
