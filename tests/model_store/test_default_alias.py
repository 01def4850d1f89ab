"""The ``default`` alias serving uses: set by a model's first servable version, moved only
by ``set_alias`` and only onto a servable version, never deleted silently, and given to
models of databases written before it existed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from model_store import ConflictError, NotFoundError, Store, open_store
from model_store.errors import NotServableError
from model_store.records import DEFAULT
from model_store.tables import AliasRow, SchemaInfo

MakeFile = Callable[[bytes], Path]
#: A manifest serving can decode (a heatmap model); the registry checks metadata only.
POSE = {"kind": "heatmap", "input_size": [64, 48]}


def _ready(
    store: Store,
    make: MakeFile,
    model: str,
    *,
    manifest: dict[str, Any] | None = None,
    parent: int | None = None,
) -> int:
    pending = store.models.create_pending_version(
        model, format="onnx", parent=parent, manifest=manifest
    )
    content = f"{model}-{pending.number}".encode()
    return store.models.finalize_version(model, pending.number, {"model": make(content)}).number


def test_the_first_servable_version_sets_default_and_later_ones_never_move_it(
    store: Store, artifact_file: MakeFile
) -> None:
    assert _ready(store, artifact_file, "m") == 1  # no pose manifest: not servable
    assert store.models.get_model("m").default is None
    with pytest.raises(NotFoundError, match="no default version"):
        store.models.resolve("m", DEFAULT)

    assert _ready(store, artifact_file, "m", manifest=POSE) == 2
    # a child inherits the manifest (a job's result), an upload brings its own
    _ready(store, artifact_file, "m", parent=2)
    _ready(store, artifact_file, "m", manifest=POSE)
    info = store.models.get_model("m")
    assert (info.default, info.latest) == (2, 4)
    assert info.aliases == {DEFAULT: 2, "latest": 4}
    assert store.models.resolve("m", DEFAULT).number == 2
    assert DEFAULT in store.models.get_version("m", 2).aliases


def test_default_moves_only_explicitly_and_only_onto_a_servable_version(
    store: Store, artifact_file: MakeFile
) -> None:
    _ready(store, artifact_file, "m", manifest=POSE)
    _ready(store, artifact_file, "m", parent=1)
    _ready(store, artifact_file, "m", manifest={"kind": "segmentation"})
    bad_heatmap = _ready(store, artifact_file, "m", manifest={"kind": "heatmap"})

    assert store.models.set_alias("m", DEFAULT, 2).number == 2
    assert store.models.resolve("m", DEFAULT).number == 2
    for number in (3, bad_heatmap):  # an unknown kind; a heatmap without input_size
        with pytest.raises(NotServableError):
            store.models.set_alias("m", DEFAULT, number)
    assert store.models.resolve("m", DEFAULT).number == 2
    with pytest.raises(ConflictError, match="move it"):
        store.models.delete_alias("m", DEFAULT)


def test_deleting_the_default_version_needs_force_and_promotes_nothing(
    store: Store, artifact_file: MakeFile
) -> None:
    _ready(store, artifact_file, "m", manifest=POSE)
    _ready(store, artifact_file, "m", manifest=POSE)
    with pytest.raises(ConflictError, match="default"):
        store.models.delete_version("m", 1)
    store.models.delete_version("m", 1, force=True)
    assert store.models.get_model("m").default is None
    # v2 was servable before: neither it nor a new version takes over unasked
    _ready(store, artifact_file, "m", manifest=POSE)
    assert store.models.get_model("m").default is None
    with pytest.raises(NotFoundError, match="no default version"):
        store.models.resolve("m", DEFAULT)
    store.models.set_alias("m", DEFAULT, 3)
    assert store.models.resolve("m", DEFAULT).number == 3


def test_a_database_from_before_default_gets_the_lowest_servable_version_once(
    database_url: str, tmp_path: Path, artifact_file: MakeFile
) -> None:
    first = open_store(database_url, tmp_path / "d")
    _ready(first, artifact_file, "old")  # not servable
    _ready(first, artifact_file, "old", manifest=POSE)
    _ready(first, artifact_file, "old", manifest=POSE)
    _ready(first, artifact_file, "plain")
    with first.db.session() as s:  # what schema 1 held: no default alias
        s.execute(delete(AliasRow))
        row = s.get(SchemaInfo, 1)
        assert row is not None
        row.version = 1
    first.close()

    second = open_store(database_url, tmp_path / "d")
    assert second.models.get_model("old").default == 2
    assert second.models.get_model("plain").default is None
    with second.db.session() as s:
        row = s.get(SchemaInfo, 1)
        assert row is not None and row.version == 2
    second.models.delete_version("old", 2, force=True)
    second.close()

    third = open_store(database_url, tmp_path / "d")  # migrated once: v3 is not promoted
    assert third.models.get_model("old").default is None
    third.close()
