"""Pose prediction for any ready version: resolve it, build its pipeline, run it.

Every ONNX artifact (keypoint model and person detector) runs in ONNX Runtime through one
bounded :class:`~pose_core.inference.runtime.SessionCache` keyed by the artifact's sha256;
the blob is re-hashed by the store when a session is (re)loaded.

A version's manifest ``kind`` picks the decoding: ``blazepose`` (BlazePose landmark model)
or ``heatmap`` (top-down heatmap model, see :func:`heatmap_settings`). Versions made by jobs
inherit the manifest and the ``detector`` artifact of their nearest ancestor that has them;
a model with no detector in its lineage uses the built-in model's detector.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from app.errors import ApiError
from app.serving.images import DecodedImage
from model_store import NotFoundError, Store, VersionInfo
from model_store.artifacts import Blob
from pose_core.builtin import BUILTIN_MODEL_NAME, ROLE_DETECTOR, ROLE_MODEL
from pose_core.inference.keypoint_model import KeypointModel
from pose_core.inference.pipeline import PosePipeline
from pose_core.inference.runtime import OnnxRunner, SessionCache
from pose_core.inference.types import PersonPose

logger = logging.getLogger(__name__)

SERVABLE_KINDS = ("blazepose", "heatmap")


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    width: int
    height: int
    people: list[PersonPose]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: ``detect``, ``landmarks``, ``total`` (and ``decode`` when the
    caller adds it)."""
    image: DecodedImage | None = None


@dataclass(frozen=True)
class ServedVersion:
    version: VersionInfo
    manifest: dict[str, Any]
    model_blob: Blob
    detector_blob: Blob | None


class Predictor:
    """Runs any servable ready version of the store on decoded images (thread-safe)."""

    def __init__(self, store: Store, *, threads: int, cache_size: int) -> None:
        self.store = store
        self.sessions = SessionCache(cache_size * 2, threads)  # a model and its detector
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lookup
    def served_version(self, model: str, ref: str | int) -> ServedVersion:
        """The version, its effective manifest and the blobs to run; 404 when unknown,
        422 when the version cannot serve keypoints."""
        version = self._resolve(model, ref)
        lineage = self._lineage(version)
        manifest = next((dict(v.manifest) for v in lineage if v.manifest), {})
        kind = manifest.get("kind")
        if kind not in SERVABLE_KINDS:
            raise ApiError(
                422,
                "not_servable",
                f"{model} v{version.number} has no pose manifest (kind {kind!r}); servable "
                f"kinds: {', '.join(SERVABLE_KINDS)}",
            )
        try:
            model_artifact = version.artifact(ROLE_MODEL)
        except NotFoundError as exc:
            raise ApiError(422, "not_servable", str(exc)) from exc
        detector = None
        for item in lineage:
            found = [a for a in item.artifacts if a.role == ROLE_DETECTOR]
            if found:
                detector = Blob(found[0].sha256, found[0].size)
                break
        if detector is None and model != BUILTIN_MODEL_NAME:
            detector = self._builtin_detector()
        return ServedVersion(
            version, manifest, Blob(model_artifact.sha256, model_artifact.size), detector
        )

    def _resolve(self, model: str, ref: str | int) -> VersionInfo:
        try:
            return self.store.models.resolve(model, ref)
        except NotFoundError:
            if model == BUILTIN_MODEL_NAME:
                from app.serving.builtin_import import builtin_unavailable_error

                error = builtin_unavailable_error(self.store.data_dir)
                if error is not None:
                    raise error from None
            raise

    def _lineage(self, version: VersionInfo) -> list[VersionInfo]:
        """The version and its ancestors, nearest first."""
        chain = [version]
        while chain[-1].parent is not None and len(chain) < 1000:
            chain.append(self.store.models.get_version(version.model, chain[-1].parent))
        return chain

    def _builtin_detector(self) -> Blob | None:
        try:
            info = self.store.models.resolve(BUILTIN_MODEL_NAME, "latest").artifact(ROLE_DETECTOR)
        except NotFoundError:
            return None
        return Blob(info.sha256, info.size)

    # ----------------------------------------------------------------- running
    def _keypoint_model(self, served: ServedVersion) -> KeypointModel:
        return self.keypoint_model(served)

    def runner(self, blob: Blob) -> OnnxRunner:
        return self.sessions.get(blob.sha256, lambda: self.store.blobs.verify(blob))

    def pipeline(self, served: ServedVersion) -> PosePipeline:
        if served.detector_blob is None:
            raise ApiError(
                503,
                "no_detector",
                f"{served.version.model} v{served.version.number} needs a person detector and "
                f"the built-in model {BUILTIN_MODEL_NAME!r} (which provides it) is not stored",
            )
        keypoints = self.keypoint_model(served)
        return PosePipeline(keypoints, self.runner(served.detector_blob))

    def keypoint_model(self, served: ServedVersion) -> KeypointModel:
        """The version's keypoint model alone (top-down use: person boxes given)."""
        runner = self.runner(served.model_blob)
        if served.manifest["kind"] == "blazepose":
            from pose_core.inference.landmarks import BlazePoseLandmarkModel

            return BlazePoseLandmarkModel(runner)
        from pose_core.importers.uploads import UploadRejected, heatmap_model_args
        from pose_core.inference.heatmap import HeatmapModel

        try:
            return HeatmapModel(runner, **heatmap_model_args(served.manifest))
        except UploadRejected as exc:
            raise ApiError(422, "not_servable", f"bad heatmap manifest: {exc}") from exc

    def predict(
        self, served: ServedVersion, image: DecodedImage, max_people: int, min_score: float
    ) -> Prediction:
        """People in one decoded image (blocking; call it from a worker thread)."""
        pipeline = self.pipeline(served)
        start = time.perf_counter()
        people, timings = pipeline.predict_timed(image.pixels, max_people, min_score)
        logger.debug(
            "predict %s v%d: %d people in %.1f ms",
            served.version.model,
            served.version.number,
            len(people),
            (time.perf_counter() - start) * 1e3,
        )
        return Prediction(
            served.version.model,
            served.version.number,
            image.width,
            image.height,
            people,
            timings,
            image,
        )
