"""Immutable records returned by the stores (never ORM objects)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

VERSION_STATUSES = ("pending", "ready", "failed")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
LATEST = "latest"
#: Version numbers fit the databases' 32-bit integer columns.
MAX_VERSION_NUMBER = 2**31 - 1
#: ASCII digits only: ``str.isdigit()`` also accepts "³" (which ``int()`` refuses) and "٣"
#: (which ``int()`` reads as 3).
_VERSION_NUMBER = re.compile(r"[0-9]+")


def version_number(ref: str | int) -> int | None:
    """The version number ``ref`` names, or None when ``ref`` is an alias (``latest``
    included). A number past :data:`MAX_VERSION_NUMBER` is returned as is: it names no
    version."""
    if isinstance(ref, int):
        return ref
    if not _VERSION_NUMBER.fullmatch(ref):
        return None
    digits = ref.lstrip("0") or "0"
    return int(digits) if len(digits) <= 10 else MAX_VERSION_NUMBER + 1
#: The alias serving uses when no version is given (stored like a user alias; see
#: :class:`model_store.registry.ModelRegistry`).
DEFAULT = "default"


@dataclass(frozen=True)
class ArtifactInfo:
    role: str
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class VersionInfo:
    model: str
    number: int
    status: str
    format: str
    parent: int | None
    recipe: dict[str, Any] | None
    manifest: dict[str, Any] | None
    report: dict[str, Any] | None
    error: str | None
    created_at: datetime
    created_by_job: str | None
    artifacts: tuple[ArtifactInfo, ...] = ()
    aliases: tuple[str, ...] = ()

    def artifact(self, role: str) -> ArtifactInfo:
        for item in self.artifacts:
            if item.role == role:
                return item
        from model_store.errors import NotFoundError

        raise NotFoundError(f"{self.model} v{self.number} has no artifact {role!r}")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    created_at: datetime
    latest: int | None
    version_count: int
    aliases: dict[str, int] = field(default_factory=dict)
    default: int | None = None


@dataclass(frozen=True)
class DatasetSummary:
    """What validating a dataset archive found (see ``model_store.datasets``)."""

    image_count: int
    annotation_count: int
    labelled_image_count: int
    has_annotations: bool
    checksum: str
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class DatasetInfo(DatasetSummary):
    """A stored dataset: its summary plus identity."""

    id: str
    name: str | None
    created_at: datetime


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str
    status: str
    params: dict[str, Any]
    progress: float
    message: str
    error: str | None
    result_model: str | None
    result_version: int | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL
