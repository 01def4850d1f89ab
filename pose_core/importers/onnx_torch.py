"""The torch form of an uploaded ONNX graph (heatmap / SimCC models), by onnx2torch.

onnx2torch is optional, like the ``[edge]`` extra: ``pip install --no-deps onnx2torch==1.5.15``
(its only other requirements, numpy and onnx, are ours already). The torch form is never
stored: the compress job converts the version's stored ONNX ``model`` artifact when a step
needs torch (the conversion is deterministic: the same graph gives the same module, and it
takes well under a second), and the result is stored as ONNX again. :func:`onnx2torch_available`
answers without importing anything, for the API process (which never imports torch).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

ONNX2TORCH_INSTALL = "pip install --no-deps onnx2torch==1.5.15"
"""How to install the converter (``--no-deps``: its metadata requires torchvision)."""

#: the newest default-domain opset whose ops onnx2torch 1.5.15 converts (a newer graph, e.g.
#: torch's opset-20 TorchScript exports, is converted down to it first: Shape-19 has none)
ONNX2TORCH_OPSET = 18

#: the exporter a converted module asks :func:`pose_core.export.export_onnx` for
CONVERTED_EXPORTER = "torchscript"


class TorchFormUnavailable(Exception):
    """The graph cannot be given a torch form (onnx2torch missing, or an op it cannot convert)."""


def onnx2torch_available() -> bool:
    """Whether onnx2torch is installed (nothing is imported)."""
    return importlib.util.find_spec("onnx2torch") is not None


def _torchvision_op_missing(*args: Any, **kwargs: Any) -> NoReturn:
    raise TorchFormUnavailable(
        "this graph uses NonMaxSuppression or RoiAlign, whose onnx2torch converters need "
        "torchvision (not installed)"
    )


@contextmanager
def _torchvision_placeholder() -> Iterator[None]:
    """While onnx2torch is imported, a stand-in ``torchvision`` when the real one is absent."""
    # onnx2torch's node_converters import nms.py (``import torchvision``) and roialign.py
    # (``from torchvision.ops import roi_align``) at import time; torchvision would pull CUDA
    # wheels and does not import beside our torch, and pose nets use neither op. The stand-in
    # leaves sys.modules afterwards: torch's exporter probes for torchvision by find_spec.
    try:
        importlib.import_module("torchvision")
        yield
        return
    except ImportError:
        pass
    vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    for name in ("nms", "box_convert", "roi_align"):
        setattr(ops, name, _torchvision_op_missing)
    vision.ops = ops  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": vision, "torchvision.ops": ops})
    try:
        yield
    finally:
        for name, module in (("torchvision", vision), ("torchvision.ops", ops)):
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_onnx2torch() -> types.ModuleType:
    """The ``onnx2torch`` module (see :func:`_torchvision_placeholder`).

    Raises:
        TorchFormUnavailable: onnx2torch is not installed (the message says how to).
    """
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    if not onnx2torch_available():
        raise TorchFormUnavailable(f"onnx2torch is not installed: {ONNX2TORCH_INSTALL}")
    with _torchvision_placeholder():
        return importlib.import_module("onnx2torch")


def onnx_to_torch(onnx_bytes: bytes) -> nn.Module:
    """The graph as a torch module (onnx2torch's ``torch.fx.GraphModule`` of plain
    ``nn.Conv2d``, ``nn.Linear``, ... layers; a MatMul by a constant weight is an ``nn.Linear``
    too: :mod:`pose_core.importers.onnx_linear`) that takes the graph's one input and returns
    its outputs in order; ``input_names`` / ``output_names`` hold the graph's, which
    :func:`pose_core.export.export_onnx` writes back (with the TorchScript exporter, which
    onnx2torch's shape ops need: :data:`pose_core.export.ONNX_EXPORTER_ATTR`).

    Raises:
        TorchFormUnavailable: onnx2torch is missing, or the graph has an op it cannot convert.
    """
    import onnx

    converter = import_onnx2torch()
    proto = onnx.load_model_from_string(onnx_bytes)
    inputs = [i.name for i in proto.graph.input]
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [name for name in inputs if name not in initializers]
    if len(inputs) != 1:
        raise TorchFormUnavailable(f"the graph has {len(inputs)} inputs; one image input needed")
    try:
        module = converter.convert(_within_supported_opset(proto))
    # onnx2torch raises NotImplementedError for an op (or op version) it has no converter for,
    # KeyError / ValueError / RuntimeError for attributes or shapes it cannot handle
    except (NotImplementedError, KeyError, ValueError, RuntimeError) as exc:
        raise TorchFormUnavailable(f"onnx2torch cannot convert the graph: {exc}") from exc
    from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

    from pose_core.export import ONNX_EXPORTER_ATTR
    from pose_core.importers.onnx_linear import as_linear_layers

    as_linear_layers(module)

    names = {
        "input_names": tuple(inputs),
        "output_names": tuple(o.name for o in proto.graph.output),
        ONNX_EXPORTER_ATTR: CONVERTED_EXPORTER,
    }
    for name, value in names.items():
        setattr(module, name, value)
    # a deep copy (every compression step makes one) of a GraphModule drops attributes of its
    # own but those fx's meta says to preserve
    module.meta[_USER_PRESERVED_ATTRIBUTES_KEY] = names
    logger.info("converted an ONNX graph of %d nodes to torch", len(proto.graph.node))
    return module


def is_converted_onnx(model: object) -> bool:
    """``model`` is a torch form made by :func:`onnx_to_torch` (or a compressed copy of one)."""
    from pose_core.export import ONNX_EXPORTER_ATTR

    return getattr(model, ONNX_EXPORTER_ATTR, None) == CONVERTED_EXPORTER


def torch_form_note(version_number: int) -> dict[str, str]:
    """What a version's report says of the torch form its compression ran on."""
    from importlib.metadata import version

    return {
        "converter": f"onnx2torch {version('onnx2torch')}",
        "from": f"the ONNX model artifact of v{version_number}, converted when the job ran",
    }


def _within_supported_opset(proto: Any) -> Any:
    """``proto``, converted down to :data:`ONNX2TORCH_OPSET` when its opset is newer."""
    from onnx import version_converter

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset <= ONNX2TORCH_OPSET:
        return proto
    logger.info("converting an opset-%d graph down to opset %d", opset, ONNX2TORCH_OPSET)
    try:
        return version_converter.convert_version(proto, ONNX2TORCH_OPSET)
    except (RuntimeError, ValueError) as exc:
        raise TorchFormUnavailable(
            f"the graph's opset {opset} is newer than onnx2torch's {ONNX2TORCH_OPSET} and "
            f"cannot be converted down: {exc}"
        ) from exc
