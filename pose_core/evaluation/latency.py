"""Latency of several runners measured in interleaved rounds.

These machines drift up to 2x within minutes, so timing runner A for a minute and then runner
B compares two different machines. Here every round calls every runner once, in a freshly
shuffled order, and ratios are taken within a round before the median over rounds.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Per-call wall time of one runner, in milliseconds.

    ``samples_ms[i]`` is the time measured in round ``i`` (same index for every runner of one
    :func:`measure_latency` call, which is what :func:`median_ratio` pairs on).
    """

    p50: float
    p95: float
    mean: float
    n: int
    samples_ms: tuple[float, ...]

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        if not samples_ms:
            raise ValueError("no latency samples")
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            p50=float(np.percentile(values, 50)),
            p95=float(np.percentile(values, 95)),
            mean=float(values.mean()),
            n=len(samples_ms),
            samples_ms=tuple(float(v) for v in samples_ms),
        )

    def to_dict(self) -> dict[str, float | int]:
        """JSON summary without the raw samples."""
        return {"p50_ms": self.p50, "p95_ms": self.p95, "mean_ms": self.mean, "n": self.n}


def measure_latency(
    runners: Mapping[str, Callable[[], object]],
    rounds: int = 50,
    warmup: int = 5,
    seed: int = 0,
) -> dict[str, LatencyStats]:
    """Time each runner ``rounds`` times, interleaved.

    Args:
        runners: name -> a zero-argument callable doing one inference (batch as it likes).
        rounds: measured rounds; each round calls every runner once, in shuffled order.
        warmup: unmeasured rounds first (session initialisation, caches, thread pools).
        seed: seeds the shuffling, so a run is reproducible in its order.

    Returns:
        name -> :class:`LatencyStats` with ``n == rounds``.
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    names = list(runners)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            runners[name]()
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if round_index >= warmup:
                samples[name].append(elapsed_ms)
    return {name: LatencyStats.from_samples(samples[name]) for name in names}


def median_ratio(numerator: LatencyStats, denominator: LatencyStats) -> float:
    """Median over rounds of ``numerator / denominator`` (both from one interleaved run)."""
    if numerator.n != denominator.n:
        raise ValueError("ratios need samples from the same interleaved run")
    return statistics.median(
        a / b for a, b in zip(numerator.samples_ms, denominator.samples_ms, strict=True)
    )
