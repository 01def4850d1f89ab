"""Export a torch model to a TFLite (LiteRT) flatbuffer, and run one with the LiteRT interpreter.

Needs the optional extra ``edge`` (``pip install -e '.[edge]'``: ``litert-torch``, which
brings ``ai-edge-quantizer`` and ``ai-edge-litert``); :func:`tflite_export_available` says
whether it is installed without importing it (the API process stays torch-free).

Precisions:

* ``fp32``: ``litert_torch.convert`` of the model (``torch.export`` -> StableHLO -> TFLite),
  input NCHW like the ONNX graph, batch 1;
* ``fp16``: the fp32 file with every weight cast to float16 by ``ai-edge-quantizer``
  (weight-only; the interpreter dequantizes them, activations stay float32);
* ``int8_dynamic``: weights int8 per channel, activations quantized at run time
  (``ai-edge-quantizer``'s dynamic-range recipe; no calibration data).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

TflitePrecision = Literal["fp32", "fp16", "int8_dynamic"]
PRECISIONS: tuple[TflitePrecision, ...] = ("fp32", "fp16", "int8_dynamic")
EXTRA_HINT = "TFLite export needs the optional extra: pip install -e '.[edge]'"


class TfliteExportError(RuntimeError):
    """The model could not be converted to TFLite."""


class TfliteExportUnavailable(TfliteExportError):
    """litert-torch (the ``edge`` extra) is not installed."""


def tflite_export_available() -> bool:
    """Whether ``litert_torch`` and ``ai_edge_quantizer`` are importable (checked without
    importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("litert_torch",
                                                                 "ai_edge_quantizer"))


def export_tflite(
    model: nn.Module, input_shape: Sequence[int], precision: TflitePrecision = "fp32"
) -> bytes:
    """The TFLite flatbuffer of ``model`` (one NCHW float32 input of ``input_shape``, batch
    1), outputs in the model's order.

    Raises:
        TfliteExportUnavailable: the ``edge`` extra is missing.
        TfliteExportError: conversion or quantization failed, or ``precision`` is unknown.
    """
    if precision not in PRECISIONS:
        raise TfliteExportError(f"unknown TFLite precision {precision!r}; known: {PRECISIONS}")
    if not tflite_export_available():
        raise TfliteExportUnavailable(EXTRA_HINT)
    import litert_torch
    import torch

    shape = (1, *[int(d) for d in input_shape[1:]])
    was_training = model.training
    model.eval()
    try:
        edge_model = litert_torch.convert(model, (torch.zeros(shape),))
        fp32 = bytes(edge_model.model_content())
    except Exception as exc:  # the converter raises whatever torch.export / MLIR hits
        raise TfliteExportError(f"TFLite conversion of {type(model).__name__} failed: {exc}") \
            from exc
    finally:
        model.train(was_training)
    logger.info("converted %s to TFLite fp32 (%d bytes)", type(model).__name__, len(fp32))
    return fp32 if precision == "fp32" else quantize_tflite(fp32, precision)


def quantize_tflite(fp32: bytes, precision: TflitePrecision) -> bytes:
    """``fp16`` or ``int8_dynamic`` version of an fp32 TFLite flatbuffer (ai-edge-quantizer)."""
    from ai_edge_quantizer import quantizer, recipe

    try:
        qt = quantizer.Quantizer(bytearray(fp32))
        if precision == "fp16":
            qt.add_weight_only_config(
                regex=".*", operation_name="*", num_bits=16, algorithm_key="float_casting"
            )
        else:
            qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        quantized = qt.quantize(enable_progress_report=False).quantized_model
    except Exception as exc:
        raise TfliteExportError(f"TFLite {precision} quantization failed: {exc}") from exc
    if quantized is None:
        raise TfliteExportError(f"TFLite {precision} quantization produced no model")
    return bytes(quantized)


class TfliteRunner:
    """Runs a TFLite flatbuffer with the LiteRT interpreter (``ai-edge-litert``) on NCHW
    batches, one sample at a time (the exported graph has batch 1); outputs in the model's
    order, stacked along the batch."""

    def __init__(self, tflite: bytes, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=tflite, num_threads=threads)
        self._runner = self._interpreter.get_signature_runner()
        details = self._runner.get_input_details()
        if len(details) != 1:
            raise TfliteExportError(f"expected one input, the model has {len(details)}")
        self._input = next(iter(details))
        # litert-torch names outputs output_0, output_1, ... in the torch model's order
        self._outputs = sorted(self._runner.get_output_details(),
                               key=lambda name: int(name.rsplit("_", 1)[-1]))

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        results: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for sample in np.asarray(batch, dtype=np.float32):
            out = self._runner(**{self._input: sample[None]})
            for index, name in enumerate(self._outputs):
                results[index].append(np.asarray(out[name]))
        return [np.concatenate(parts, axis=0) for parts in results]
