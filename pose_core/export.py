"""Export a torch model to ONNX with a dynamic batch axis.

Uses the ``torch.export``-based exporter (``dynamo=True``, the default of torch 2.13): its
graph is smaller than the legacy TorchScript exporter's (asymmetric pads fold into ``Conv``),
and both agree with each other on the BlazePose models. A converted ONNX upload says it needs
the TorchScript exporter (:data:`ONNX_EXPORTER_ATTR`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18

#: a module attribute naming the exporter it needs: ``"torchscript"`` for the torch form of an
#: ONNX upload (:mod:`pose_core.importers.onnx_torch`), whose onnx2torch shape ops (Shape,
#: Slice, Reshape) emit their own ONNX node under the TorchScript exporter but read their
#: shape tensors as numpy, which torch.export cannot trace; anything else: ``torch.export``
ONNX_EXPORTER_ATTR = "onnx_exporter"


class OnnxExportError(RuntimeError):
    """The model could not be exported or the exported graph is invalid."""


def _default_output_names(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "output_names", None)
    if names:
        return tuple(names)
    return ("output",)


def _default_input_name(model: nn.Module) -> str:
    names = getattr(model, "input_names", None)  # a converted ONNX upload keeps its own
    return str(names[0]) if names else "input"


def export_onnx(model: nn.Module, path: str | os.PathLike[str], input_shape: Sequence[int],
                input_name: str | None = None, output_names: Sequence[str] | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` as ONNX to ``path`` and check it with ``onnx.checker``.

    Args:
        model: a module taking one tensor; put in eval mode for the export.
        input_shape: example input shape, batch first, e.g. ``(1, 3, 256, 256)``; dim 0 is
            exported as the dynamic axis ``batch``.
        input_name: ONNX input name; default ``model.input_names[0]`` (a converted ONNX
            upload: :mod:`pose_core.importers.onnx_torch`) or ``"input"``.
        output_names: ONNX output names; default ``model.output_names`` (GraphModel, a
            converted ONNX upload) or ``("output",)``.
        opset: ONNX opset (>= 17).
    """
    import onnx
    import torch

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    names = list(output_names) if output_names is not None else list(
        _default_output_names(model))
    was_training = model.training
    model.eval()
    # A batch of 2 keeps torch.export from specialising the batch dimension to 1.
    example = torch.zeros((max(2, int(input_shape[0])), *[int(d) for d in input_shape[1:]]))
    batch = torch.export.Dim("batch", min=1)
    input_names = [input_name or _default_input_name(model)]
    try:
        if getattr(model, ONNX_EXPORTER_ATTR, "dynamo") == "torchscript":
            torch.onnx.export(
                model, (example,), str(target), input_names=input_names, output_names=names,
                dynamic_axes={name: {0: "batch"} for name in [*input_names, *names]},
                opset_version=opset, dynamo=False,
            )
        else:
            program = torch.onnx.export(
                model, (example,), input_names=input_names, output_names=names,
                dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False,
            )
            if program is None:
                raise OnnxExportError("torch.onnx.export returned no program")
            program.save(str(target))
        onnx.checker.check_model(str(target), full_check=True)
    except OnnxExportError:
        raise
    except Exception as exc:
        raise OnnxExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    finally:
        model.train(was_training)
    logger.info("exported %s to %s (opset %d)", type(model).__name__, target, opset)
    return target
