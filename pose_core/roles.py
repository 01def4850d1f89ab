"""The roles of a version's stored artifacts (docs/ARCHITECTURE.md, "Version artifacts")."""

from __future__ import annotations

from typing import Final, Literal

ArtifactRole = Literal["model", "detector", "recipe", "weights", "source", "tflite"]

ROLE_MODEL: Final = "model"
"""The ONNX graph serving runs (every version has one)."""
ROLE_DETECTOR: Final = "detector"
"""The person detector ONNX; inherited through lineage, shared by sha256."""
ROLE_RECIPE: Final = "recipe"
"""Torch form, part 1: the GraphModel's ``recipe.json``."""
ROLE_WEIGHTS: Final = "weights"
"""Torch form, part 2: its ``weights.safetensors`` (no pickle)."""
ROLE_SOURCE: Final = "source"
"""The uploaded original, when the upload was converted."""
ROLE_TFLITE: Final = "tflite"
"""The TFLite file of an ``export_tflite`` version."""

TORCH_ROLES: Final[frozenset[str]] = frozenset({ROLE_RECIPE, ROLE_WEIGHTS})
"""A version with both has a torch form: every compression method can start from it."""
