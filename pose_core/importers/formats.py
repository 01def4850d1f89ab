"""Checks a user-uploaded model file before anything is stored.

One handler per format, chosen by file suffix. A handler loads the file safely (never
unpickling arbitrary objects), runs one forward pass on a dummy input and returns an
:class:`UploadInfo`, or raises :class:`UploadRejected` with a human-readable reason.

Adding a format is one function::

    @register_format(".tflite")
    def _inspect_tflite(path: Path, manifest: Mapping[str, Any]) -> UploadInfo: ...

The built-in handlers live in :mod:`~pose_core.importers.onnx_format` and
:mod:`~pose_core.importers.torch_formats`, the result types in
:mod:`~pose_core.importers.upload_info`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pose_core.importers.manifest import ManifestRejected, validated_manifest
from pose_core.importers.onnx_format import inspect_onnx
from pose_core.importers.torch_formats import inspect_state_dict, inspect_tflite
from pose_core.importers.upload_info import UploadInfo, UploadRejected

UploadHandler = Callable[[Path, Mapping[str, Any]], UploadInfo]

_HANDLERS: dict[str, UploadHandler] = {}


def register_format(*suffixes: str) -> Callable[[UploadHandler], UploadHandler]:
    """Register ``handler`` for file names ending with any of ``suffixes``."""

    def decorator(handler: UploadHandler) -> UploadHandler:
        for suffix in suffixes:
            _HANDLERS[suffix.lower()] = handler
        return handler

    return decorator


def supported_suffixes() -> list[str]:
    return sorted(_HANDLERS)


def inspect_upload(path: Path, filename: str, manifest: Mapping[str, Any] | None) -> UploadInfo:
    """Validate an uploaded model file; raise UploadRejected with the reason."""
    lowered = filename.lower()
    for suffix in sorted(_HANDLERS, key=len, reverse=True):
        if lowered.endswith(suffix):
            try:
                return _HANDLERS[suffix](path, validated_manifest(manifest))
            except ManifestRejected as exc:
                raise UploadRejected(str(exc)) from exc
    raise UploadRejected(
        f"unsupported model file {filename!r}; supported: {', '.join(supported_suffixes())}"
    )


register_format(".onnx")(inspect_onnx)
register_format(".tflite")(inspect_tflite)
register_format(".safetensors", ".pt", ".pth")(inspect_state_dict)

__all__ = [
    "UploadInfo",
    "UploadRejected",
    "inspect_upload",
    "register_format",
    "supported_suffixes",
]
