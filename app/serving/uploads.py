"""What the model upload route needs from serving: architecture recipes for state_dict
uploads, and the files and manifest to store for a converted upload."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_store import NotFoundError, Store
from pose_core.builtin import ROLE_RECIPE
from pose_core.importers.uploads import UploadInfo, UploadRejected

SOURCE_ROLE = "source"
#: Manifest keys of an architecture's stored manifest that its state_dict uploads inherit.
INHERITED_KEYS = ("kind", "keypoints", "input", "outputs", "detector")


def with_architecture(store: Store, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The upload manifest plus, when it names a stored ``architecture`` (e.g.
    ``blazepose-full``), that model's graph ``recipe`` and its serving keys."""
    result = dict(manifest or {})
    name = result.get("architecture")
    if not isinstance(name, str) or "recipe" in result:
        return result
    try:
        version = store.models.resolve(name, "latest")
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
        return {**info.artifacts, SOURCE_ROLE: upload}
    return {"model": upload, **info.artifacts}


def stored_manifest(info: UploadInfo, manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The user's manifest (without an inline recipe, stored as an artifact instead) with the
    keys the inspection settled."""
    merged = {k: v for k, v in (manifest or {}).items() if k != "recipe"}
    merged.update(info.manifest)
    return merged or None
