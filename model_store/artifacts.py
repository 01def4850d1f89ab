"""Content-addressed blob storage: ``<root>/<sha[:2]>/<sha>``.

Writes are atomic (temp file in the same filesystem, fsync, rename, fsync of the
directory) so a crash never leaves a half-written blob under its final name. Every read
re-hashes the blob and raises :class:`ArtifactIntegrityError` on mismatch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from model_store.errors import ArtifactIntegrityError

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: temp files older than this belong to a writer that died (a SIGKILLed worker mid-write)
STALE_TEMP_AGE_S = 3600.0


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int


def sha256_file(path: Path) -> Blob:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Blob(digest.hexdigest(), size)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """Blobs addressed by sha256 under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactIntegrityError(f"not a sha256 address: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put_stream(self, source: BinaryIO) -> Blob:
        """Copy ``source`` into the store atomically; return its address."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            blob = Blob(digest.hexdigest(), size)
            final = self.path_for(blob.sha256)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            return blob
        finally:
            tmp.unlink(missing_ok=True)

    def sweep_temp_files(self, older_than_s: float = STALE_TEMP_AGE_S) -> int:
        """Delete temp files a killed writer left behind (older than ``older_than_s``).

        A live write's temp file is younger than that (uploads are size-limited), so this is
        safe while other processes write. Returns how many files were removed.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self._tmp.glob("blob-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another process swept it first
                continue
        if removed:
            logger.info("removed %d stale temp files from %s", removed, self._tmp)
        return removed

    def put_file(self, path: Path) -> Blob:
        with path.open("rb") as handle:
            return self.put_stream(handle)

    def verify(self, blob: Blob) -> Path:
        """Return the blob's path after checking it exists with the right size and hash."""
        path = self.path_for(blob.sha256)
        if not path.is_file():
            raise ArtifactIntegrityError(f"artifact {blob.sha256} is missing")
        actual = sha256_file(path)
        if actual != blob:
            raise ArtifactIntegrityError(
                f"artifact {blob.sha256} is corrupt (sha256 {actual.sha256}, "
                f"{actual.size} bytes, expected {blob.size})"
            )
        return path

    def copy_to(self, blob: Blob, destination: Path) -> Path:
        """Copy a verified blob to ``destination`` (e.g. a worker's scratch dir)."""
        shutil.copyfile(self.verify(blob), destination)
        return destination

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)
