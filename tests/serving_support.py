"""Helpers for the serving tests: the built-in BlazePose bundle built once and cached under
``<repo>/.cache/test-bundle/<hash of the code that builds it>``, and storing it in a store."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from model_store import Store, VersionInfo
from pose_core.builtin import BUILTIN_MODEL_NAME, BlazePoseBundle, blazepose_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSET_CACHE = REPO_ROOT / ".cache" / "assets"
BUNDLE_FILES = {
    "model": "landmark.onnx",
    "detector": "detector.onnx",
    "recipe": "recipe.json",
    "weights": "weights.safetensors",
}
_BUILDER_SOURCES = (
    "pose_core/builtin.py",
    "pose_core/export.py",
    "pose_core/importers/tflite.py",
    "pose_core/importers/tflite_reader.py",
    "pose_core/models/graph.py",
    "pose_core/models/layers.py",
)


def _code_key() -> str:
    digest = hashlib.sha256()
    for name in _BUILDER_SOURCES:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_bundle(asset_dir: Path = ASSET_CACHE) -> BlazePoseBundle:
    """The bundle of :func:`pose_core.builtin.build_blazepose_bundle`, rebuilt only when the
    code that builds it changes."""
    from pose_core.builtin import build_blazepose_bundle

    folder = REPO_ROOT / ".cache" / "test-bundle" / _code_key()
    if not all((folder / f).is_file() for f in BUNDLE_FILES.values()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
        try:
            build_blazepose_bundle(asset_dir, scratch)
            if not folder.exists():
                scratch.replace(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return BlazePoseBundle(
        artifacts={role: folder / name for role, name in BUNDLE_FILES.items()},
        manifest=blazepose_manifest(),
    )


def store_builtin(store: Store, bundle: BlazePoseBundle) -> VersionInfo:
    """Store ``bundle`` as the next version of ``blazepose-full``."""
    pending = store.models.create_pending_version(
        BUILTIN_MODEL_NAME, format="onnx", recipe={"source": "builtin"}, manifest=bundle.manifest
    )
    return store.models.finalize_version(BUILTIN_MODEL_NAME, pending.number, bundle.artifacts)
