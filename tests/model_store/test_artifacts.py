from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from model_store.artifacts import ArtifactStore, Blob
from model_store.errors import ArtifactIntegrityError


def test_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path):
    blobs = ArtifactStore(tmp_path / "a")
    data = b"x" * (3 * 1024 * 1024 + 17)
    blob = blobs.put_stream(io.BytesIO(data))
    assert blob == Blob(hashlib.sha256(data).hexdigest(), len(data))
    assert blobs.verify(blob).read_bytes() == data
    assert list((tmp_path / "a" / ".tmp").iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path):
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk went away")
            return b"y" * 1024

    blobs = ArtifactStore(tmp_path / "a")
    with pytest.raises(OSError):
        blobs.put_stream(Broken())  # type: ignore[arg-type]
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []


def test_rejects_non_hash_addresses(tmp_path: Path):
    blobs = ArtifactStore(tmp_path / "a")
    with pytest.raises(ArtifactIntegrityError):
        blobs.path_for("../../etc/passwd")


def test_stale_temp_files_of_a_dead_writer_are_swept_on_open(tmp_path: Path) -> None:
    """A worker SIGKILLed mid-write leaves ``artifacts/.tmp/blob-*``; the next open removes
    it once it is old, and never touches a young one (a write in progress)."""
    import os
    import time

    from model_store import open_store

    data_dir = tmp_path / "data"
    store = open_store(f"sqlite:///{tmp_path / 'meta.db'}", data_dir)
    tmp_dir = data_dir / "artifacts" / ".tmp"
    stale, fresh = tmp_dir / "blob-stale", tmp_dir / "blob-fresh"
    stale.write_bytes(b"half a model")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    store.close()

    reopened = open_store(f"sqlite:///{tmp_path / 'meta.db'}", data_dir)
    assert not stale.exists()
    assert fresh.exists()
    blob = reopened.blobs.put_stream(io.BytesIO(b"complete"))
    assert reopened.blobs.verify(blob).read_bytes() == b"complete"
    reopened.close()
