"""The ``kind`` of a version's pose manifest: which decoder serves it
(:mod:`pose_core.inference.assemble`), which jobs accept it, what uploads settle."""

from __future__ import annotations

from typing import Final, Literal

ManifestKind = Literal["blazepose", "heatmap", "simcc"]

KIND_BLAZEPOSE: Final = "blazepose"
"""BlazePose landmark model (+ person detector): landmarks, presence, heatmap outputs."""
KIND_HEATMAP: Final = "heatmap"
"""N x K x H x W heatmaps, one channel per keypoint (see ``heatmap_manifest``)."""
KIND_SIMCC: Final = "simcc"
"""SimCC x / y classification outputs (see ``simcc_manifest``)."""

SERVABLE_KINDS: Final[tuple[ManifestKind, ...]] = (KIND_BLAZEPOSE, KIND_HEATMAP, KIND_SIMCC)
"""Every kind a version may be served as, in the order errors list them."""
