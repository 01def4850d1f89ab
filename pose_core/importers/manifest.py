"""The manifest of an uploaded model, checked before the file is opened, and the bound on the
dummy input of its dry run (which runs in the API process: nothing it allocates may be large).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

#: Largest height or width of a model input (``input_size``, ``input_shape``).
MAX_INPUT_SIDE = 2048
#: Largest dummy input of a dry run, in elements: a 3 x 2048 x 2048 image (48 MiB of float32).
MAX_DRY_RUN_ELEMENTS = 3 * MAX_INPUT_SIDE * MAX_INPUT_SIDE

Side = Annotated[StrictInt, Field(ge=1, le=MAX_INPUT_SIDE)]
Dim = Annotated[StrictInt, Field(ge=1, le=MAX_DRY_RUN_ELEMENTS)]


class ManifestRejected(ValueError):
    """The manifest is malformed, or a dry-run input would be too large."""


class UploadManifest(BaseModel):
    """Keys an upload's manifest may set; other keys are kept as given."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    kind: StrictStr | None = None
    architecture: StrictStr | None = None
    recipe: dict[str, Any] | None = None
    input_shape: list[Dim] | None = Field(default=None, min_length=1, max_length=8)
    """Shape of the first input for the dry run, e.g. ``[1, 3, 256, 192]``."""
    input_size: Side | tuple[Side, Side] | None = None
    """``[height, width]`` (or one side) of an NCHW image input."""
    mean: tuple[float, float, float] | None = None
    std: (
        tuple[
            Annotated[float, Field(gt=0)],
            Annotated[float, Field(gt=0)],
            Annotated[float, Field(gt=0)],
        ]
        | None
    ) = None
    channel_order: Literal["rgb", "bgr", "RGB", "BGR"] | None = None
    keypoints: Literal["coco17"] | list[StrictStr] | None = None


def validated_manifest(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest as given (JSON values), once :class:`UploadManifest` accepts it.

    Raises:
        ManifestRejected: naming every bad field.
    """
    if not manifest:
        return {}
    try:
        UploadManifest.model_validate(dict(manifest))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'manifest'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ManifestRejected(f"bad manifest: {problems}") from exc
    return dict(manifest)


def check_dry_run_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    """``shape`` when a dummy input of it is small enough to allocate (see
    :data:`MAX_DRY_RUN_ELEMENTS`).

    Raises:
        ManifestRejected: a dimension is not positive or the input is too large.
    """
    if any(d < 1 for d in shape):
        raise ManifestRejected(f"input {name!r}: shape {list(shape)} has a non-positive dimension")
    elements = math.prod(shape)
    if elements > MAX_DRY_RUN_ELEMENTS:
        raise ManifestRejected(
            f"input {name!r}: shape {list(shape)} has {elements} elements, over the dry-run "
            f"limit of {MAX_DRY_RUN_ELEMENTS}; give a smaller input_shape / input_size"
        )
    return tuple(shape)
