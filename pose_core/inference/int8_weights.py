"""INT8 weights that ONNX Runtime computes exactly on every x86 CPU.

ONNX Runtime multiplies u8 activations by s8 weights with ``VPMADDUBSW`` on x86 CPUs without
VNNI (AVX2 / AVX-512 without VNNI): each pair of products is summed into a saturating int16, so
a dense conv whose inputs use the whole u8 range loses the large sums (ONNX Runtime's own
quantization docs name the issue). On BlazePose-Full the project's INT8 graph is 11.54 px from
fp32 on held-out crops when computed exactly and 32.9 px on an AVX2 CPU
(docs/compression-results.md, session 9). VNNI (``VPDPBUSD``), AMX and ARM's dot products
accumulate in int32 and are exact.

:func:`reencode_u8_weights` rewrites every s8 weight ``w`` (zero point ``z``) that a dense
conv, ``MatMul`` or ``Gemm`` reads as u8 ``w + 128`` with zero point ``z + 128``: the same
dequantized values, so the same model, but run by the u8 x u8 kernels, which widen to int16
before multiplying and never saturate. :func:`u8s8_saturates` says whether this CPU needs it;
:func:`pose_core.inference.runtime.ort_session` applies it to every graph it loads there, so a
version measured or served on such a CPU computes what its fidelity says.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)

#: ``auto`` (re-encode where :func:`u8s8_saturates`), ``s8`` (never), ``u8`` (always)
INT8_WEIGHTS_ENV = "POSECOMPRESS_INT8_WEIGHTS"
#: CPU flags (Linux ``/proc/cpuinfo``) of the x86 instructions that accumulate u8 x s8 in int32
EXACT_U8S8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_X86 = frozenset({"x86_64", "amd64", "i386", "i686"})


@functools.cache
def u8s8_saturates() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels saturate on this CPU (x86 without VNNI or AMX).

    An x86 CPU whose flags cannot be read (not Linux) counts as saturating: the u8 encoding is
    exact everywhere, only slower. ``POSECOMPRESS_INT8_WEIGHTS`` = ``s8`` / ``u8`` overrides.
    """
    choice = os.environ.get(INT8_WEIGHTS_ENV, "auto").strip().lower()
    if choice in {"s8", "u8"}:
        return choice == "u8"
    if choice != "auto":
        logger.warning("%s=%r is not auto, s8 or u8: using auto", INT8_WEIGHTS_ENV, choice)
    if platform.machine().lower() not in _X86:
        return False
    flags = cpu_flags()
    saturates = flags is None or not (flags & EXACT_U8S8_FLAGS)
    if saturates:
        logger.info("this CPU has no VNNI: INT8 weights run as u8 (exact, slower than s8)")
    return saturates


def cpu_flags() -> frozenset[str] | None:
    """This CPU's flags from Linux ``/proc/cpuinfo`` (``None`` where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def reencode_u8_weights(model: onnx.ModelProto) -> int:
    """Rewrite, in place, the s8 weights (and s8 zero points) that dense convs, ``MatMul`` and
    ``Gemm`` read through a ``DequantizeLinear`` as u8 shifted by 128; returns how many.

    Depthwise convs keep s8: ONNX Runtime's depthwise kernel accumulates in int32 (measured:
    re-encoding them changes nothing).
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    converted: dict[str, str] = {}

    def as_u8(name: str) -> str:
        if name not in converted:
            values = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            new = numpy_helper.from_array(values.astype(np.uint8), f"{name}__u8")
            graph.initializer.append(new)
            converted[name] = new.name
        return converted[name]

    count = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zero_point = inits.get(node.input[0]), inits.get(node.input[2])
        if weight is None or zero_point is None:
            continue
        if {weight.data_type, zero_point.data_type} != {onnx.TensorProto.INT8}:
            continue
        readers = consumers.get(node.output[0], [])
        if not readers or not all(_gemm_reader(r, weight) for r in readers):
            continue
        node.input[0], node.input[2] = as_u8(weight.name), as_u8(zero_point.name)
        count += 1
    used = {name for n in graph.node for name in n.input}
    for name in converted:
        if name not in used:
            graph.initializer.remove(inits[name])
    return count


def _gemm_reader(node: onnx.NodeProto, weight: onnx.TensorProto) -> bool:
    """Whether ``node`` multiplies by ``weight`` in ONNX Runtime's QGEMM (not depthwise)."""
    if node.op_type in {"MatMul", "Gemm"}:
        return True
    if node.op_type != "Conv":
        return False
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return group == 1 or (len(weight.dims) > 1 and weight.dims[1] > 1)


def exact_int8_source(model: str | Path | bytes) -> str | bytes:
    """What to give ONNX Runtime for ``model`` so this CPU computes its INT8 weights exactly:
    ``model`` itself unless :func:`u8s8_saturates` and the graph has s8 dense weights."""
    source = model if isinstance(model, bytes) else str(model)
    if not u8s8_saturates():
        return source
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    if b"DequantizeLinear" not in data:
        return source
    proto = onnx.load_from_string(data)
    if not reencode_u8_weights(proto):
        return source
    return proto.SerializeToString()
