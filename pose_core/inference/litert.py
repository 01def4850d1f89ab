"""A :data:`~pose_core.inference.types.Runner` over the LiteRT (TFLite) interpreter.

MediaPipe's own runtime, used as the reference in tests and benchmarks. ``ai-edge-litert``
is a test/bench dependency: it is imported when a runner is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class LiteRTRunner:
    """Runs a ``.tflite`` model on NCHW batches (one interpreter call per batch item).

    4-D inputs and outputs are transposed between NCHW (our convention) and NHWC (TFLite's).

    Args:
        model_path: the ``.tflite`` file.
        threads: interpreter threads.
        outputs: indices (in the interpreter's output order) to return; all when None.
    """

    def __init__(
        self, model_path: str | Path, threads: int = 1, outputs: Sequence[int] | None = None
    ) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeError("LiteRTRunner needs the ai-edge-litert package") from exc
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        details = self._interpreter.get_output_details()
        chosen = range(len(details)) if outputs is None else outputs
        self._outputs = [details[i]["index"] for i in chosen]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N, C, H, W) float32 -> the selected outputs, each with a leading N axis."""
        per_item: list[list[np.ndarray]] = []
        for item in np.asarray(batch, dtype=np.float32):
            self._interpreter.set_tensor(
                self._input, np.ascontiguousarray(item.transpose(1, 2, 0)[None])
            )
            self._interpreter.invoke()
            per_item.append([self._interpreter.get_tensor(i)[0] for i in self._outputs])
        stacked = [np.stack(values) for values in zip(*per_item, strict=True)]
        return [v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for v in stacked]
