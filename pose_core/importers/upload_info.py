"""What an upload check returns (:class:`UploadInfo`) or raises (:class:`UploadRejected`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UploadRejected(Exception):
    """The upload cannot be used; ``reason`` is shown to the user (HTTP 422)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class UploadInfo:
    format: str
    """Stored as the version's format, e.g. ``onnx``."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    """Output shapes as observed in the dummy forward pass."""
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Files to store by role when the upload is converted: ``model`` (the ONNX graph that
    serving runs) replaces the upload, which is then kept as role ``source``."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """Manifest keys the handler settled (e.g. ``kind``), merged over the user's."""

    def as_report(self) -> dict[str, Any]:
        def spec(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}

        return {
            "format": self.format,
            "inputs": [spec(t) for t in self.inputs],
            "outputs": [spec(t) for t in self.outputs],
            **self.details,
        }
