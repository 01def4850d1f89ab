"""What a compression job's model reads and returns, by its manifest ``kind``.

* the crops it takes (:class:`CropFormat`): BlazePose's are 256 x 256 RGB in [0, 1] (no
  format: the crops' default); a heatmap or SimCC model's are its manifest's ``input_size``,
  ``mean`` / ``std`` and ``channel_order``, cut from the same person rectangles enlarged to
  the input's aspect ratio, as serving cuts them;
* how its outputs become COCO-17 keypoints in crop pixels, for the fidelity of a result to
  its parent (budgets, target search, the report): BlazePose's landmark output, or the
  serving decoder of the manifest (:func:`pose_core.inference.assemble.keypoint_model`);
* whether its outputs are BlazePose's (``landmark_outputs``): the landmark distillation
  losses and the pruning criteria that read landmarks need them; other models are distilled
  on their raw outputs (:mod:`~pose_core.compression.distill_loss`).

Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pose_core.manifest_kinds import KIND_BLAZEPOSE, SERVABLE_KINDS, ManifestKind

if TYPE_CHECKING:
    from pose_core.inference.heatmap import HeatmapModel

#: the person box is this much smaller than the crop's short side (crops are cut at 1.5 x
#: the box): the OKS object scale of the fidelity
CROP_TO_BOX = 1.5


@dataclass(frozen=True)
class CropFormat:
    """A model input other than BlazePose's: ``width`` x ``height`` pixels, each channel
    ``(pixel / 255 - mean) / std`` in ``channel_order``."""

    width: int
    height: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: Literal["rgb", "bgr"] = "rgb"

    def normalise(self, crop: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB in [0, 1] -> the model's (H, W, 3) input values."""
        if self.channel_order == "bgr":
            crop = crop[..., ::-1]
        return (crop - np.asarray(self.mean)) / np.asarray(self.std)


@dataclass(frozen=True)
class PoseFormat:
    """The crops and outputs of one pose model kind (see the module docstring)."""

    kind: ManifestKind = KIND_BLAZEPOSE
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, Any]) -> PoseFormat:
        """The format of a version's pose manifest (as :mod:`model_store.lineage` serves it).

        Raises:
            ValueError: not a servable kind, or a malformed manifest.
        """
        kind = manifest.get("kind")
        if kind not in SERVABLE_KINDS:
            raise ValueError(f"no pose format for manifest kind {kind!r}")
        found = cls(kind, dict(manifest))
        if found.kind != KIND_BLAZEPOSE:
            found._decoder()  # checks the fields
        return found

    @property
    def landmark_outputs(self) -> bool:
        """The model returns BlazePose's outputs (landmarks (N, 195), presence, heatmap)."""
        return self.kind == KIND_BLAZEPOSE

    def crop_format(self) -> CropFormat | None:
        """The model's crops; ``None`` for BlazePose's (the crops' default)."""
        if self.landmark_outputs:
            return None
        decoder = self._decoder()
        width, height = decoder.input_size
        mean = tuple(float(v) for v in decoder.mean.ravel())
        std = tuple(float(v) for v in decoder.std.ravel())
        return CropFormat(width, height, mean, std, decoder.channel_order)  # type: ignore[arg-type]

    def keypoints(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """The model's outputs on N crops -> (N, 17, 2) COCO-17 keypoints in crop pixels."""
        if self.landmark_outputs:
            from pose_core.keypoints import BLAZEPOSE33_TO_COCO17

            landmarks = np.asarray(outputs[0])
            coco = list(BLAZEPOSE33_TO_COCO17)
            return landmarks.reshape(len(landmarks), -1, 5)[:, coco, :2]
        xy, _ = self._decoder().decode(outputs)
        return np.asarray(xy)

    def fidelity(
        self,
        candidate: Sequence[np.ndarray],
        parent: Sequence[np.ndarray],
        crop_hw: tuple[int, int],
        *,
        held_out: bool,
    ) -> dict[str, float | int | bool | None]:
        """:func:`keypoint_fidelity` of two models' outputs on the same crops of ``crop_hw``
        pixels (the person box: the short side / 1.5)."""
        return keypoint_fidelity(
            self.keypoints(candidate),
            self.keypoints(parent),
            min(crop_hw) / CROP_TO_BOX,
            held_out=held_out,
        )

    def _decoder(self) -> HeatmapModel:
        from pose_core.inference.assemble import keypoint_model
        from pose_core.inference.heatmap import HeatmapModel

        decoder = keypoint_model(self.manifest, _never_run)
        assert isinstance(decoder, HeatmapModel)  # heatmap and SimCC models both are
        return decoder


def keypoint_fidelity(
    candidate: np.ndarray, parent: np.ndarray, box_side: float, *, held_out: bool
) -> dict[str, float | int | bool | None]:
    """Fidelity of candidate vs parent keypoints on the same crops, by
    :func:`~pose_core.evaluation.fidelity.fidelity_metrics`.

    Args:
        candidate, parent: (N, 17, 2) COCO-17 keypoints in crop pixels.
        box_side: the person box side in crop pixels (the OKS object scale is its square).
        held_out: whether no step trained or calibrated on these crops (stated in the report).

    Returns:
        ``mean_landmark_px`` (mean COCO-17 keypoint error, crop pixels), ``mean_oks_vs_parent``
        (the two means are ``None`` without crops), ``n_crops`` and ``held_out``.
    """
    from pose_core.evaluation.fidelity import fidelity_metrics

    boxes = np.tile(np.array([0.0, 0.0, box_side, box_side]), (len(parent), 1))
    report = fidelity_metrics(np.asarray(candidate), np.asarray(parent), boxes)
    return {
        "mean_landmark_px": report.mean_error_px,
        "mean_oks_vs_parent": report.mean_oks,
        "n_crops": report.n_people,
        "held_out": held_out,
    }


BLAZEPOSE_FORMAT = PoseFormat()
"""The built-in model's format (the default of every compression entry point)."""


def _never_run(batch: Any) -> Any:
    raise AssertionError("a pose format only decodes outputs; it never runs a model")
