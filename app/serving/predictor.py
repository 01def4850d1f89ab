"""Pose prediction for any ready version: resolve it, build its pipeline, run it.

Every ONNX artifact (keypoint model and person detector) runs in ONNX Runtime through one
bounded :class:`~pose_core.inference.runtime.SessionCache` keyed by the artifact's sha256;
the blob is re-hashed by the store when a session is (re)loaded.

What a version serves with (manifest and detector inherited through its lineage) comes from
:mod:`model_store.lineage`; the manifest ``kind`` picks the decoding in
:mod:`pose_core.inference.assemble`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from app.serving.images import DecodedImage, decode_image
from app.serving.malloc import limit_malloc_arenas
from app.serving.slots import FairSlots
from model_store import NotFoundError, Store
from model_store.artifacts import Blob
from model_store.lineage import ServedVersion, resolve_served
from pose_core.builtin import BUILTIN_MODEL_NAME
from pose_core.inference import assemble
from pose_core.inference.keypoint_model import KeypointModel
from pose_core.inference.pipeline import PosePipeline
from pose_core.inference.runtime import OnnxRunner, SessionCache
from pose_core.inference.types import PersonPose

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    width: int
    height: int
    people: list[PersonPose]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: ``detect``, ``landmarks``, ``total`` (and ``queue``, ``decode`` from
    :meth:`Predictor.predict_bytes`)."""
    image: DecodedImage | None = None


def default_inference_slots(threads: int) -> int:
    """Images decoded and run at once: enough ONNX Runtime threads for every core, plus one
    image whose decoding and crops fill the gaps between another's model calls."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // threads) + 1


class Predictor:
    """Runs any servable ready version of the store on images (thread-safe).

    At most ``slots`` images (default :func:`default_inference_slots`) are decoded and run at
    once; further requests wait their turn, first come first served. More would only
    oversubscribe the cores (each ONNX Runtime call already uses ``threads`` of them) and hold
    more decoded images and model activations in memory. The process's malloc arenas are
    limited to ``slots`` (:func:`~app.serving.malloc.limit_malloc_arenas`).
    """

    def __init__(
        self, store: Store, *, threads: int, cache_size: int, slots: int | None = None
    ) -> None:
        self.store = store
        self.sessions = SessionCache(cache_size * 2, threads)  # a model and its detector
        self.slots = slots or default_inference_slots(threads)
        self._slots = FairSlots(self.slots)
        # ready versions do not change: what serving one needs is looked up once per version
        # (the alias is still resolved on every request, so alias moves apply at once)
        self._served: dict[str, ServedVersion] = {}
        limit_malloc_arenas(self.slots)

    # ----------------------------------------------------------------- lookup
    def served_version(self, model: str, ref: str | int) -> ServedVersion:
        """The version, its effective manifest and the blobs to run.

        Raises:
            NotFoundError: unknown model or version (404).
            ApiError: the built-in model is being imported or its import failed (503).
            NotServableError: the version cannot serve keypoints (422).
        """
        try:
            number, identity = self.store.models.resolve_identity(model, ref)
            served = self._served.get(identity)
            if served is None:
                served = resolve_served(self.store, model, number)
                if served.from_lineage_only:
                    self._served[identity] = served
            return served
        except NotFoundError:
            if model == BUILTIN_MODEL_NAME:
                from app.serving.builtin_import import builtin_unavailable_error

                error = builtin_unavailable_error(self.store.data_dir)
                if error is not None:
                    raise error from None
            raise

    # ----------------------------------------------------------------- running
    def runner(self, blob: Blob) -> OnnxRunner:
        return self.sessions.get(blob.sha256, lambda: self.store.blobs.verify(blob))

    def pipeline(self, served: ServedVersion) -> PosePipeline:
        """Detector + keypoint model.

        Raises:
            NoDetectorError: no detector to run (503).
            ManifestError: the manifest cannot be decoded (422).
        """
        detector = self.runner(served.require_detector())
        return assemble.pose_pipeline(served.manifest, self.runner(served.model_blob), detector)

    def keypoint_model(self, served: ServedVersion) -> KeypointModel:
        """The version's keypoint model alone (top-down use: person boxes given)."""
        return assemble.keypoint_model(served.manifest, self.runner(served.model_blob))

    def predict_bytes(
        self,
        served: ServedVersion,
        data: bytes,
        *,
        max_bytes: int,
        max_pixels: int,
        max_people: int,
        min_score: float,
        tiled: bool = True,
    ) -> Prediction:
        """Decode an uploaded photo and predict, in one of the inference slots (blocking).

        Raises:
            ApiError: the image is refused (see :func:`~app.serving.images.decode_image`).
        """
        start = time.perf_counter()
        with self._slots:
            admitted = time.perf_counter()
            image = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
            decoded = time.perf_counter()
            prediction = self.predict(served, image, max_people, min_score, tiled)
        prediction.timings.update(
            queue=admitted - start, decode=decoded - admitted, total=time.perf_counter() - start
        )
        return prediction

    def predict(
        self,
        served: ServedVersion,
        image: DecodedImage,
        max_people: int,
        min_score: float,
        tiled: bool = True,
    ) -> Prediction:
        """People in one decoded image (blocking; call it from a worker thread)."""
        pipeline = self.pipeline(served)
        start = time.perf_counter()
        people, timings = pipeline.predict_timed(image.pixels, max_people, min_score, tiled)
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
