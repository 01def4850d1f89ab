"""Types shared by every compression method: configs, the compressible model, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict


class MethodConfig(BaseModel):
    """Base of every method's config: frozen, strict, JSON round-trippable.

    Subclasses set ``method`` as a ``Literal`` default (e.g. ``method: Literal["prune"] = "prune"``)
    and add their own fields with defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    config_version: int = 1


@dataclass(frozen=True)
class OnnxModel:
    """A model that only exists as an ONNX graph (for example after INT8 quantization)."""

    onnx_bytes: bytes
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()


#: What a compression step takes and returns: a torch module (prunable, trainable) or an ONNX graph.
CompressibleModel = torch.nn.Module | OnnxModel


@dataclass(frozen=True)
class CompressionResult:
    """A new model (the input is never mutated) and a JSON-able report of what was done."""

    model: CompressibleModel
    report: dict[str, Any] = field(default_factory=dict)


class CompressionError(Exception):
    """A compression step cannot run (bad config, unsupported model, failed accuracy gate)."""


class UnknownMethodError(CompressionError):
    """The recipe names a method that is not registered."""
