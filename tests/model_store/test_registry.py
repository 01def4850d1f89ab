from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from model_store import (
    ArtifactIntegrityError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    Store,
    open_store,
)
from model_store.errors import SchemaVersionError
from model_store.tables import SchemaInfo

MakeFile = Callable[[bytes], Path]


def _ready(store: Store, make: MakeFile, model: str, content: bytes, parent: int | None = None):
    pending = store.models.create_pending_version(model, format="onnx", parent=parent)
    return store.models.finalize_version(model, pending.number, {"model": make(content)})


def test_versions_are_numbered_per_model_with_lineage(store: Store, artifact_file: MakeFile):
    v1 = _ready(store, artifact_file, "pose", b"one")
    v2 = _ready(store, artifact_file, "pose", b"two", parent=1)
    other = _ready(store, artifact_file, "other", b"x")
    assert (v1.number, v2.number, other.number) == (1, 2, 1)
    assert v2.parent == 1 and v1.parent is None
    assert v2.status == "ready"
    art = v2.artifact("model")
    assert art.size == 3 and len(art.sha256) == 64
    assert [m.name for m in store.models.list_models()] == ["other", "pose"]


def test_pending_version_does_not_resolve_until_finalized(store: Store, artifact_file: MakeFile):
    pending = store.models.create_pending_version("m", format="onnx", recipe={"step": "x"})
    assert pending.status == "pending"
    with pytest.raises(NotFoundError):
        store.models.resolve("m", "latest")
    with pytest.raises(NotFoundError):
        store.models.resolve("m", 1)
    ready = store.models.finalize_version("m", 1, {"model": artifact_file(b"abc")}, report={"a": 1})
    assert ready.report == {"a": 1} and ready.recipe == {"step": "x"}
    assert store.models.resolve("m", "latest").number == 1
    with pytest.raises(ConflictError):
        store.models.finalize_version("m", 1, {"model": artifact_file(b"again")})


def test_failed_version_never_becomes_latest(store: Store, artifact_file: MakeFile):
    _ready(store, artifact_file, "m", b"1")
    bad = store.models.create_pending_version("m", format="onnx", created_by_job="job-1")
    assert store.models.fail_pending_versions_of_job("job-1", "worker died") == [("m", 2)]
    assert store.models.get_version("m", bad.number).status == "failed"
    assert store.models.get_version("m", bad.number).error == "worker died"
    assert store.models.resolve("m", "latest").number == 1
    with pytest.raises(ConflictError):
        store.models.mark_failed("m", 1, "ready versions cannot fail")


def test_latest_follows_highest_ready_version(store: Store, artifact_file: MakeFile):
    _ready(store, artifact_file, "m", b"1")
    _ready(store, artifact_file, "m", b"2")
    assert store.models.resolve("m", "latest").number == 2
    assert "latest" in store.models.get_version("m", 2).aliases
    assert "latest" not in store.models.get_version("m", 1).aliases
    store.models.delete_version("m", 2)
    assert store.models.resolve("m", "latest").number == 1
    assert store.models.get_model("m").latest == 1


def test_alias_moves_in_one_call(store: Store, artifact_file: MakeFile):
    _ready(store, artifact_file, "m", b"1")
    _ready(store, artifact_file, "m", b"2")
    store.models.set_alias("m", "production", 1)
    assert store.models.resolve("m", "production").number == 1
    store.models.set_alias("m", "production", 2)
    assert store.models.resolve("m", "production").number == 2
    assert store.models.get_model("m").aliases == {"production": 2, "latest": 2}
    with pytest.raises(ConflictError):
        store.models.set_alias("m", "latest", 1)
    with pytest.raises(InvalidArgumentError):
        store.models.set_alias("m", "bad alias!", 1)
    store.models.delete_alias("m", "production")
    with pytest.raises(NotFoundError):
        store.models.resolve("m", "production")


def test_delete_version_with_children_or_alias_conflicts(store: Store, artifact_file: MakeFile):
    _ready(store, artifact_file, "m", b"1")
    _ready(store, artifact_file, "m", b"2", parent=1)
    with pytest.raises(ConflictError, match="children"):
        store.models.delete_version("m", 1)
    store.models.set_alias("m", "prod", 2)
    with pytest.raises(ConflictError, match="aliases"):
        store.models.delete_version("m", 2)
    store.models.delete_version("m", 1, force=True)
    assert store.models.get_version("m", 2).parent is None
    store.models.delete_version("m", 2, force=True)
    assert store.models.list_versions("m") == []


def test_artifacts_are_content_addressed_and_garbage_collected(
    store: Store, artifact_file: MakeFile
):
    a = _ready(store, artifact_file, "a", b"shared").artifact("model")
    b = _ready(store, artifact_file, "b", b"shared").artifact("model")
    assert a.sha256 == b.sha256
    store.models.delete_model("a")
    assert store.models.artifact_path("b", "latest").read_bytes() == b"shared"
    store.models.delete_model("b")
    assert not store.blobs.path_for(a.sha256).exists()


def test_corrupt_or_missing_artifact_is_detected_on_read(store: Store, artifact_file: MakeFile):
    info = _ready(store, artifact_file, "m", b"precious bytes").artifact("model")
    path = store.blobs.path_for(info.sha256)
    path.chmod(0o644)
    path.write_bytes(b"precious bytez")
    with pytest.raises(ArtifactIntegrityError, match="corrupt"):
        store.models.artifact_path("m", 1)
    path.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        store.models.artifact_path("m", 1)


def test_names_are_validated(store: Store):
    with pytest.raises(InvalidArgumentError):
        store.models.create_pending_version("../evil", format="onnx")


def test_reopening_reuses_data_and_checks_schema_version(database_url: str, tmp_path: Path):
    first = open_store(database_url, tmp_path / "d")
    src = tmp_path / "f.bin"
    src.write_bytes(b"kept")
    first.models.create_pending_version("m", format="onnx")
    first.models.finalize_version("m", 1, {"model": src})
    first.close()
    second = open_store(database_url, tmp_path / "d")
    assert second.models.artifact_path("m", "latest").read_bytes() == b"kept"
    with second.db.session() as s:
        row = s.get(SchemaInfo, 1)
        assert row is not None
        row.version = 999
    second.close()
    with pytest.raises(SchemaVersionError):
        open_store(database_url, tmp_path / "d")


def test_concurrent_report_entries_are_all_kept(store: Store, artifact_file: MakeFile):
    """Evaluation jobs on one version, finishing at once, each add their own entry."""
    from concurrent.futures import ThreadPoolExecutor

    ready = store.models.finalize_version(
        "m",
        store.models.create_pending_version("m", format="onnx").number,
        {"model": artifact_file(b"x")},
        report={"params": 7, "evaluation": {"old": {"gt-boxes": {"ap": 0.1}}}},
    )

    def add(i: int) -> None:
        mode = "gt-boxes" if i % 2 else "detector"
        store.models.set_report_entry("m", ready.number, ["evaluation", f"ds{i // 2}", mode], i)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(16)))

    report = store.models.get_version("m", ready.number).report
    assert report["params"] == 7
    assert report["evaluation"]["old"] == {"gt-boxes": {"ap": 0.1}}
    for i in range(16):
        mode = "gt-boxes" if i % 2 else "detector"
        assert report["evaluation"][f"ds{i // 2}"][mode] == i
    with pytest.raises(InvalidArgumentError):
        store.models.set_report_entry("m", ready.number, [], 1)
