"""Stored versions as runnable models: the torch form (roles ``recipe`` + ``weights``), the
ONNX graph (role ``model``) and the inference pipeline serving runs (landmark ONNX + the
optional ``detector`` ONNX through ONNX Runtime). Used by the ``compress`` and ``evaluate``
jobs and by ``posecompress eval``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from model_store import NotFoundError, Store, VersionInfo
from model_store.errors import NotServableError
from model_store.lineage import served_version
from model_store.records import DEFAULT
from pose_core.roles import ROLE_MODEL, ROLE_RECIPE, ROLE_WEIGHTS, TORCH_ROLES

if TYPE_CHECKING:
    from pose_core.compression.base import CompressibleModel
    from pose_core.inference.pipeline import PosePipeline


def has_role(version: VersionInfo, role: str) -> bool:
    return any(a.role == role for a in version.artifacts)


def has_torch_form(version: VersionInfo) -> bool:
    return all(has_role(version, role) for role in TORCH_ROLES)


def artifact_bytes(store: Store, version: VersionInfo, role: str) -> bytes:
    """A verified artifact's bytes (sha256 re-checked)."""
    return store.models.artifact_path(version.model, version.number, role).read_bytes()


def load_compressible(
    store: Store, version: VersionInfo, *, convert_onnx: bool = False
) -> CompressibleModel:
    """The torch ``GraphModel`` when the version has ``recipe`` + ``weights``; else, with
    ``convert_onnx``, its ONNX graph converted to torch (an uploaded heatmap / SimCC model:
    :func:`pose_core.importers.onnx_torch.onnx_to_torch`, which raises ``TorchFormUnavailable``);
    else its ONNX graph as an ``OnnxModel`` (which only ONNX-level methods such as quantize
    accept)."""
    from pose_core.compression.base import OnnxModel

    if has_torch_form(version):
        from safetensors.torch import load

        from pose_core.models.graph import GraphModel

        recipe = json.loads(artifact_bytes(store, version, ROLE_RECIPE))
        weights = load(artifact_bytes(store, version, ROLE_WEIGHTS))
        return GraphModel.from_recipe(recipe, weights)
    onnx_bytes = artifact_bytes(store, version, ROLE_MODEL)
    if convert_onnx:
        from pose_core.importers.onnx_torch import onnx_to_torch

        return onnx_to_torch(onnx_bytes)
    return OnnxModel(onnx_bytes=onnx_bytes)


class PipelineUnavailable(Exception):
    """The version cannot run as a pose pipeline (no pose manifest, no detector, ...)."""


def version_pipeline(
    store: Store, version: VersionInfo, threads: int, *, with_detector: bool
) -> PosePipeline:
    """The pipeline serving runs for this version: manifest and detector inherited through
    the lineage (:mod:`model_store.lineage`), ONNX Runtime sessions, decoding picked by the
    manifest (:mod:`pose_core.inference.assemble`). Without ``with_detector`` only
    ``predict_in_rects`` (ground-truth boxes) is needed, so a version with no detector
    anywhere still runs."""
    from pose_core.inference.assemble import ManifestError, pose_pipeline
    from pose_core.inference.runtime import OnnxRunner

    try:
        served = served_version(store, version)
        detector = None
        if with_detector or served.detector_blob is not None:
            detector = OnnxRunner(store.blobs.verify(served.require_detector()), threads)
        runner = OnnxRunner(store.blobs.verify(served.model_blob), threads)
        return pose_pipeline(served.manifest, runner, detector)
    except (NotServableError, ManifestError) as exc:
        raise PipelineUnavailable(str(exc)) from exc


def parse_model_ref(text: str) -> tuple[str, str]:
    """``NAME[:VERSION]`` -> (name, version or alias; ``default`` when omitted)."""
    name, _, ref = text.partition(":")
    if not name:
        raise NotFoundError(f"no model name in {text!r}")
    return name, ref or DEFAULT
