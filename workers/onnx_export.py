"""ONNX export work used by the ``export_onnx`` job: graph optimization with ONNX
Runtime and a parity check of the result against its source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

OPTIMIZATION_LEVELS = ("disable", "basic", "extended")


def _session(path: Path, threads: int, level: str = "disable", save_to: Path | None = None) -> Any:
    from pose_core.inference.runtime import Optimization, ort_session

    if level not in OPTIMIZATION_LEVELS:
        raise KeyError(level)
    optimization = cast("Optimization", level)
    return ort_session(
        path, threads, spin=None, optimization=optimization, save_optimized_to=save_to
    )


def optimize_onnx(source: Path, target: Path, level: str, threads: int) -> None:
    """Write ``source`` optimized by ONNX Runtime at ``level`` to ``target``
    (``disable``: a validated copy of the graph)."""
    import onnx

    if level not in OPTIMIZATION_LEVELS:
        raise ValueError(f"unknown optimization level {level!r}; known: {OPTIMIZATION_LEVELS}")
    if level == "disable":
        model = onnx.load(str(source))
        onnx.save(model, str(target))
    else:
        _session(source, threads, level, save_to=target)
    onnx.checker.check_model(str(target))


def parity_check(
    reference: Path,
    candidate: Path,
    *,
    samples: int,
    manifest: Mapping[str, Any],
    threads: int,
    on_step: Callable[[int, int], None],
) -> float:
    """Max absolute output difference between two ONNX models over ``samples`` random
    inputs (seeded). ``on_step(done, total)`` is called after each sample."""
    import numpy as np

    from pose_core.importers.onnx_format import dummy_feeds

    ref = _session(reference, threads)
    cand = _session(candidate, threads)
    rng = np.random.default_rng(0)
    worst = 0.0
    for index in range(samples):
        feeds, _ = dummy_feeds(ref, manifest, rng)
        for a, b in zip(ref.run(None, feeds), cand.run(None, feeds), strict=True):
            diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
            worst = max(worst, float(diff.max(initial=0.0)))
        on_step(index + 1, samples)
    return worst
