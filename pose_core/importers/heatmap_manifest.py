"""The manifest of a heatmap upload (``kind: heatmap``) and the check of its outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pose_core.importers.upload_info import UploadInfo, UploadRejected
from pose_core.manifest_kinds import KIND_HEATMAP


def heatmap_model_args(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`~pose_core.inference.heatmap.HeatmapModel` from a heatmap
    manifest: ``input_size`` [height, width] (or one int), ``mean``/``std`` (3 values in
    [0, 1] pixel units; default ImageNet's), ``channel_order`` rgb|bgr (default rgb) and
    ``keypoints`` (``coco17`` or the K channel names, which must include the COCO-17 ones).

    Raises:
        UploadRejected: a field is missing or malformed.
    """
    from pose_core.inference.heatmap import HeatmapModelError, coco17_indices

    size = manifest.get("input_size")
    if isinstance(size, int):
        size = [size, size]
    if not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise UploadRejected("a heatmap manifest needs input_size: [height, width]")
    keypoints = manifest.get("keypoints", "coco17")
    if keypoints != "coco17" and not (
        isinstance(keypoints, list) and all(isinstance(k, str) for k in keypoints)
    ):
        raise UploadRejected("manifest keypoints must be 'coco17' or a list of names")
    try:
        coco17_indices(keypoints)
        mean = [float(v) for v in manifest.get("mean", (0.485, 0.456, 0.406))]
        std = [float(v) for v in manifest.get("std", (0.229, 0.224, 0.225))]
    except (HeatmapModelError, TypeError, ValueError) as exc:
        raise UploadRejected(f"bad heatmap manifest: {exc}") from exc
    order = str(manifest.get("channel_order", "rgb")).lower()
    if order not in ("rgb", "bgr") or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UploadRejected("manifest needs channel_order rgb|bgr and 3 mean / 3 positive std")
    return {
        "input_size": (int(size[1]), int(size[0])),
        "mean": mean,
        "std": std,
        "channel_order": order,
        "keypoint_names": keypoints,
    }


def check_heatmap_outputs(info: UploadInfo, manifest: Mapping[str, Any]) -> UploadInfo:
    args = heatmap_model_args(manifest)
    keypoints = args["keypoint_names"]
    channels = 17 if keypoints == "coco17" else len(keypoints)
    if not info.outputs:
        raise UploadRejected("the model has no output")
    shape = info.outputs[0].shape
    if len(shape) != 4 or shape[1] != channels:
        raise UploadRejected(
            f"a heatmap model's first output must be N x {channels} x H x W "
            f"(one channel per keypoint); got {list(shape)}"
        )
    width, height = args["input_size"]
    image_input = info.inputs[0].shape if len(info.inputs) == 1 else ()
    if len(image_input) != 4 or not (image_input[1] == 3 or isinstance(image_input[1], str)):
        raise UploadRejected("a heatmap model takes one N x 3 x H x W image input")
    return UploadInfo(
        format=info.format,
        inputs=info.inputs,
        outputs=info.outputs,
        details={**info.details, "heatmap": {"size": list(shape[2:]), "input": [height, width]}},
        manifest={
            "kind": KIND_HEATMAP,
            "input_size": [int(height), int(width)],
            "mean": args["mean"],
            "std": args["std"],
            "channel_order": args["channel_order"],
            "keypoints": keypoints,
        },
    )
