"""What the model upload route needs from serving: architecture recipes for state_dict
uploads, the files and manifest to store for a converted upload, and the check that an
upload under the name of a model that serves keypoints serves them too."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model_store import NotFoundError, Store
from model_store.records import DEFAULT
from pose_core.importers.upload_info import UploadInfo, UploadRejected
from pose_core.keypoints import COCO17_NAMES
from pose_core.roles import ROLE_MODEL, ROLE_RECIPE, ROLE_SOURCE

#: Manifest keys of an architecture's stored manifest that its state_dict uploads inherit.
INHERITED_KEYS = ("kind", "keypoints", "input", "outputs", "detector")


def with_architecture(store: Store, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The upload manifest plus, when it names a stored ``architecture`` (e.g.
    ``blazepose-full``), the graph ``recipe`` of that model's default version and its
    serving keys."""
    result = dict(manifest or {})
    name = result.get("architecture")
    if not isinstance(name, str) or "recipe" in result:
        return result
    try:
        version = store.models.resolve(name, DEFAULT)
        recipe_path = store.models.artifact_path(name, version.number, ROLE_RECIPE)
    except NotFoundError as exc:
        raise UploadRejected(f"unknown architecture {name!r}: {exc}") from exc
    result["recipe"] = json.loads(recipe_path.read_text(encoding="utf-8"))
    for key in INHERITED_KEYS:
        if version.manifest and key in version.manifest:
            result.setdefault(key, version.manifest[key])
    return result


def stored_files(info: UploadInfo, upload: Path) -> dict[str, Path]:
    """Artifacts by role: the converted files with the original as ``source``, or the upload
    itself as ``model``."""
    if "model" in info.artifacts:
        return {**info.artifacts, ROLE_SOURCE: upload}
    return {"model": upload, **info.artifacts}


def stored_manifest(info: UploadInfo, manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The user's manifest (without an inline recipe, stored as an artifact instead) with the
    keys the inspection settled."""
    merged = {k: v for k, v in (manifest or {}).items() if k != "recipe"}
    merged.update(info.manifest)
    return merged or None


def check_serves_model_task(
    store: Store, name: str, files: Mapping[str, Path], manifest: Mapping[str, Any] | None
) -> None:
    """An upload under the name of a model with a servable version must serve keypoints too:
    its manifest decodes (:func:`pose_core.inference.assemble.check_manifest`) and its
    ``model`` file, run on one crop, decodes to the 17 COCO keypoints every servable version
    serves. A new name, or a model that never served keypoints, takes any upload.

    Raises:
        UploadRejected: the upload would not serve ``name``'s task.
    """
    try:
        versions = store.models.list_versions(name)
    except NotFoundError:
        return
    serving = next((v for v in versions if store.models.is_servable(v)), None)
    if serving is None:
        return
    from pose_core.inference.assemble import ManifestError, check_manifest

    prefix = f"model {name!r} serves keypoints (v{serving.number}); this upload"
    try:
        check_manifest(manifest or {})
        keypoints = _decoded_keypoints(manifest or {}, files[ROLE_MODEL])
    except ManifestError as exc:
        raise UploadRejected(f"{prefix} does not: {exc}") from exc
    except Exception as exc:  # whatever the decoder hits on outputs of the wrong shape
        raise UploadRejected(f"{prefix} does not decode into keypoints: {exc}") from exc
    expected = (len(COCO17_NAMES), 3)
    if keypoints.shape != expected or not np.isfinite(keypoints).all():
        raise UploadRejected(
            f"{prefix} decodes to keypoints of shape {list(keypoints.shape)} (finite: "
            f"{bool(np.isfinite(keypoints).all())}), not the {expected[0]} COCO keypoints"
        )


def _decoded_keypoints(manifest: Mapping[str, Any], model: Path) -> np.ndarray:
    """The keypoints the version would serve for one crop of a seeded noise image."""
    from pose_core.inference.assemble import keypoint_model
    from pose_core.inference.crop import CropRect
    from pose_core.inference.runtime import OnnxRunner

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    people = keypoint_model(manifest, OnnxRunner(model)).estimate(
        image, [CropRect(128.0, 128.0, 192.0, 192.0)]
    )
    if len(people) != 1:
        raise ValueError(f"{len(people)} people decoded from one crop")
    return np.asarray(people[0].keypoints)
