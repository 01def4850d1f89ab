"""What serving a version needs, read from the store: the manifest and the detector are
inherited from the nearest ancestor, the built-in model's detector is the fallback."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from model_store import NotFoundError, Store, VersionInfo
from model_store.artifacts import Blob
from model_store.errors import NoDetectorError, NotServableError
from model_store.lineage import lineage, resolve_served, served_version
from pose_core.builtin import BUILTIN_MODEL_NAME

MakeFile = Callable[[bytes], Path]
MANIFEST = {"kind": "heatmap", "input_size": [64, 48]}


def _ready(
    store: Store,
    model: str,
    artifacts: Mapping[str, Path],
    *,
    parent: int | None = None,
    manifest: dict[str, Any] | None = None,
) -> VersionInfo:
    pending = store.models.create_pending_version(
        model, format="onnx", parent=parent, manifest=manifest
    )
    return store.models.finalize_version(model, pending.number, artifacts)


def _blob(version: VersionInfo, role: str) -> Blob:
    info = version.artifact(role)
    return Blob(info.sha256, info.size)


def test_a_child_inherits_the_nearest_manifest_and_detector(
    store: Store, artifact_file: MakeFile
) -> None:
    root = _ready(
        store,
        "pose",
        {"model": artifact_file(b"m1"), "detector": artifact_file(b"d1")},
        manifest=MANIFEST,
    )
    child = _ready(store, "pose", {"model": artifact_file(b"m2")}, parent=root.number)
    grandchild = _ready(store, "pose", {"model": artifact_file(b"m3")}, parent=child.number)

    assert [v.number for v in lineage(store, grandchild)] == [3, 2, 1]
    served = served_version(store, grandchild)
    assert served.version.number == 3
    assert served.manifest == MANIFEST
    assert served.model_blob == _blob(grandchild, "model")
    assert served.detector_blob == served.require_detector() == _blob(root, "detector")
    assert resolve_served(store, "pose", "latest") == served


def test_the_builtin_detector_is_the_fallback(store: Store, artifact_file: MakeFile) -> None:
    upload = _ready(store, "upload", {"model": artifact_file(b"m")}, manifest=MANIFEST)
    with pytest.raises(NoDetectorError, match="needs a person detector"):
        served_version(store, upload).require_detector()

    builtin = _ready(
        store,
        BUILTIN_MODEL_NAME,
        {"model": artifact_file(b"bm"), "detector": artifact_file(b"bd")},
        manifest={"kind": "blazepose"},
    )
    assert served_version(store, upload).require_detector() == _blob(builtin, "detector")


def test_versions_that_cannot_serve_are_refused(store: Store, artifact_file: MakeFile) -> None:
    plain = _ready(store, "plain", {"model": artifact_file(b"p")})
    with pytest.raises(NotServableError, match="no pose manifest"):
        served_version(store, plain)
    odd = _ready(store, "odd", {"model": artifact_file(b"o")}, manifest={"kind": "segmentation"})
    with pytest.raises(NotServableError, match="'segmentation'"):
        served_version(store, odd)
    no_model = _ready(store, "weights", {"weights": artifact_file(b"w")}, manifest=MANIFEST)
    with pytest.raises(NotServableError, match="no artifact 'model'"):
        served_version(store, no_model)
    with pytest.raises(NotFoundError):
        resolve_served(store, "missing", "latest")
