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
