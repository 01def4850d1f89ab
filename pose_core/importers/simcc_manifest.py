"""The manifest of a SimCC upload (``kind: simcc``) and the check of its outputs.

Fields: those of a heatmap manifest (``input_size`` [height, width], ``mean``, ``std``,
``channel_order``, ``keypoints``; see :mod:`pose_core.importers.heatmap_manifest`)
plus ``simcc_split_ratio`` (bins per input pixel, RTMPose: 2.0). The upload check settles
``simcc_outputs`` [x, y]: the positions of the outputs named ``simcc_x`` and ``simcc_y``, else
the first two outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pose_core.importers.heatmap_manifest import heatmap_model_args
from pose_core.importers.upload_info import UploadInfo, UploadRejected
from pose_core.manifest_kinds import KIND_SIMCC

OUTPUT_NAMES = ("simcc_x", "simcc_y")


def simcc_model_args(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`~pose_core.inference.simcc.SimccModel` from a manifest.

    Raises:
        UploadRejected: a field is missing or malformed.
    """
    ratio = manifest.get("simcc_split_ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
        raise UploadRejected("a SimCC manifest needs simcc_split_ratio: a positive number")
    order = manifest.get("simcc_outputs", [0, 1])
    if not (
        isinstance(order, list | tuple)
        and len(order) == 2
        and all(isinstance(i, int) and i >= 0 for i in order)
        and order[0] != order[1]
    ):
        raise UploadRejected("manifest simcc_outputs must be two distinct output positions [x, y]")
    return {
        **heatmap_model_args(manifest),
        "split_ratio": float(ratio),
        "output_order": (int(order[0]), int(order[1])),
    }


def check_simcc_outputs(info: UploadInfo, manifest: Mapping[str, Any]) -> UploadInfo:
    """The dummy forward pass's outputs fit the manifest: ``simcc_x`` N x K x (W * s) and
    ``simcc_y`` N x K x (H * s), one channel per keypoint. Returns ``info`` with the settled
    manifest (``kind``, the heatmap fields, ``simcc_split_ratio``, ``simcc_outputs``)."""
    names = [spec.name for spec in info.outputs]
    if len(names) < 2:
        raise UploadRejected("a SimCC model needs two outputs, simcc_x and simcc_y")
    order = (
        [names.index(n) for n in OUTPUT_NAMES]
        if all(n in names for n in OUTPUT_NAMES)
        else manifest.get("simcc_outputs", [0, 1])
    )
    args = simcc_model_args({**manifest, "simcc_outputs": order})
    ix, iy = args["output_order"]
    if max(ix, iy) >= len(names):
        raise UploadRejected(f"manifest simcc_outputs {list(order)}: the model has {len(names)}")
    keypoints = args["keypoint_names"]
    channels = 17 if keypoints == "coco17" else len(keypoints)
    width, height = args["input_size"]
    ratio = args["split_ratio"]
    for axis, index, pixels in (("x", ix, width), ("y", iy, height)):
        shape = list(info.outputs[index].shape)
        bins = round(pixels * ratio)
        if len(shape) != 3 or shape[1] != channels or shape[2] != bins:
            raise UploadRejected(
                f"SimCC output {names[index]!r} must be N x {channels} x {bins} "
                f"(keypoints x input {axis} pixels * split ratio {ratio:g}); got {shape}"
            )
    image_input = info.inputs[0].shape if len(info.inputs) == 1 else ()
    if len(image_input) != 4:
        raise UploadRejected("a SimCC model takes one N x 3 x H x W image input")
    return UploadInfo(
        format=info.format,
        inputs=info.inputs,
        outputs=info.outputs,
        details={**info.details, "simcc": {"bins": [round(width * ratio), round(height * ratio)]}},
        manifest={
            "kind": KIND_SIMCC,
            "input_size": [int(height), int(width)],
            "mean": args["mean"],
            "std": args["std"],
            "channel_order": args["channel_order"],
            "keypoints": keypoints,
            "simcc_split_ratio": ratio,
            "simcc_outputs": [ix, iy],
        },
    )
