"""ONNX Runtime: the one session factory (:func:`ort_session`), a
:data:`~pose_core.inference.types.Runner` per model and a bounded LRU cache of them keyed by
artifact sha256. ``onnxruntime`` is imported when a session is built.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

Optimization = Literal["disable", "basic", "extended", "all"]


def ort_session(
    model: str | Path | bytes,
    threads: int = 1,
    *,
    spin: bool | None = False,
    optimization: Optimization = "all",
    save_optimized_to: Path | None = None,
    quiet: bool = False,
) -> onnxruntime.InferenceSession:
    """A CPU ONNX Runtime session: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, graph optimisations up to ``optimization``. Idle intra-op threads
    do not spin unless ``spin`` is set (``None``: ONNX Runtime's default, spinning).
    ``save_optimized_to`` writes the optimised graph there; ``quiet`` logs errors only.
    Every session of the package is built here; on a CPU whose u8 x s8 kernels saturate, INT8
    dense weights are re-encoded as u8 first (:mod:`~pose_core.inference.int8_weights`)."""
    import onnxruntime as ort

    from pose_core.inference.int8_weights import exact_int8_source

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if spin is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if save_optimized_to is not None:
        options.optimized_model_filepath = str(save_optimized_to)
    if quiet:
        options.log_severity_level = 3
    source = exact_int8_source(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class RuntimeLoadError(RuntimeError):
    """ONNX Runtime could not load a model."""


class OnnxRunner:
    """An ONNX Runtime CPU session called like a Runner: (N, C, H, W) float32 -> outputs.

    Sequential execution, ``threads`` intra-op threads, all graph optimisations. Models
    whose batch dimension is fixed are run one item at a time. Idle intra-op threads do not
    spin unless ``spin`` is set: on a shared or busy CPU, spinning threads steal the cores the
    other requests need (measured: ORT/LiteRT latency 1.27 -> 0.74 under load with it off).
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1, *, spin: bool = False) -> None:
        try:
            self.session = ort_session(model, threads, spin=spin)
        except Exception as exc:  # ORT raises its own exception types
            raise RuntimeLoadError(f"ONNX Runtime cannot load the model: {exc}") from exc
        model_input = self.session.get_inputs()[0]
        self.input_name: str = model_input.name
        self.input_shape: list[int | str | None] = list(model_input.shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self._fixed_batch = isinstance(self.input_shape[0], int)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a batch; outputs in the model's output order, each with the leading N axis."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not self._fixed_batch or batch.shape[0] == self.input_shape[0]:
            return list(self.session.run(None, {self.input_name: batch}))
        per_item = [self.session.run(None, {self.input_name: item[None]}) for item in batch]
        return [np.concatenate(values) for values in zip(*per_item, strict=True)]


class SessionCache:
    """Bounded, thread-safe LRU of :class:`OnnxRunner` keyed by artifact sha256.

    Args:
        max_sessions: sessions kept; the least recently used one is dropped beyond it.
        threads: intra-op threads of every session.
    """

    def __init__(self, max_sessions: int, threads: int) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.threads = threads
        self._runners: OrderedDict[str, OnnxRunner] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, sha256: str, load: Callable[[], str | Path | bytes]) -> OnnxRunner:
        """The runner for ``sha256``, building it from ``load()`` (a path or the model bytes)
        on a miss. Concurrent misses for one key build it once."""
        with self._lock:
            runner = self._cached(sha256)
            if runner is not None:
                return runner
            key_lock = self._loading.setdefault(sha256, threading.Lock())
        with key_lock:
            with self._lock:
                runner = self._cached(sha256)
            if runner is not None:
                return runner
            logger.info("loading ONNX Runtime session %s", sha256[:12])
            runner = OnnxRunner(load(), self.threads)
            with self._lock:
                self._runners[sha256] = runner
                self._runners.move_to_end(sha256)
                while len(self._runners) > self.max_sessions:
                    evicted, _ = self._runners.popitem(last=False)
                    logger.info("evicted ONNX Runtime session %s", evicted[:12])
                self._loading.pop(sha256, None)
            return runner

    def _cached(self, sha256: str) -> OnnxRunner | None:
        """The cached runner, marked most recently used (call with ``_lock`` held)."""
        runner = self._runners.get(sha256)
        if runner is not None:
            self._runners.move_to_end(sha256)
        return runner

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            return sha256 in self._runners

    def __len__(self) -> int:
        with self._lock:
            return len(self._runners)

    def clear(self) -> None:
        """Drop every session."""
        with self._lock:
            self._runners.clear()
