"""Types shared by every compression method: the compressible model, the result, the errors.

Configs live in :mod:`pose_core.compression.configs` (torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class OnnxModel:
    """A model that only exists as an ONNX graph (for example after INT8 quantization)."""

    onnx_bytes: bytes
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()


#: What a compression step takes and returns: a torch module (prunable, trainable) or an ONNX graph.
CompressibleModel = Union["torch.nn.Module", OnnxModel]


@dataclass(frozen=True)
class CompressionResult:
    """A new model (the input is never mutated) and a JSON-able report of what was done."""

    model: CompressibleModel
    report: dict[str, Any] = field(default_factory=dict)


class CompressionError(Exception):
    """A compression step cannot run (bad config, unsupported model, failed accuracy gate)."""


class UnknownMethodError(CompressionError):
    """The recipe names a method that is not registered."""


class StopRequested(Exception):
    """``data.should_stop()`` said stop (the job was cancelled) between two pieces of work."""
