"""Chains of compression steps (a recipe), e.g. prune 30% -> distill -> int8.

Every step receives the previous step's model; the teacher of every step that distils is the
chain's input model (the fp32 parent), unless ``data.teacher`` names another one. Each step gets
its own work dir (``step{i}_{method}``, so checkpoints of a killed chain are found again) and its
own slice of the progress bar.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pose_core.compression.base import CompressibleModel, CompressionResult, OnnxModel
from pose_core.compression.configs import MethodConfig
from pose_core.compression.data import CompressionData
from pose_core.compression.registry import compress, parse_config

logger = logging.getLogger(__name__)


def parse_recipe(steps: Sequence[Mapping[str, Any] | MethodConfig]) -> list[MethodConfig]:
    """Typed configs of a recipe given as dicts (``{"method": ..., ...}``) or configs."""
    return [s if isinstance(s, MethodConfig) else parse_config(s) for s in steps]


def run_recipe(
    model: CompressibleModel,
    steps: Sequence[Mapping[str, Any] | MethodConfig],
    data: CompressionData,
    keep_intermediate: bool = True,
) -> list[CompressionResult]:
    """Run ``steps`` in order on ``model`` (never mutated).

    Returns one result per step when ``keep_intermediate`` (each result's report carries
    ``lineage``: ``step`` index, ``of`` steps, ``recipe`` so far), else only the last one
    (whose report also holds every step's report under ``steps``).
    """
    configs = parse_recipe(steps)
    if not configs:
        raise ValueError("a recipe needs at least one step")
    teacher = data.teacher if data.teacher is not None else model
    results: list[CompressionResult] = []
    current = model
    for index, config in enumerate(configs):
        start = time.monotonic()
        step_data = replace(
            data.for_step(
                f"step{index}_{config.method}", index / len(configs), (index + 1) / len(configs)
            ),
            teacher=None if isinstance(teacher, OnnxModel) else teacher,
        )
        logger.info("recipe step %d/%d: %s", index + 1, len(configs), config.method)
        result = compress(current, config, step_data)
        report = {
            **result.report,
            "step_wall_time_s": time.monotonic() - start,
            "lineage": {
                "step": index,
                "of": len(configs),
                "recipe": [c.model_dump(mode="json") for c in configs[: index + 1]],
            },
        }
        results.append(CompressionResult(result.model, report))
        current = result.model
    data.progress(1.0, "recipe done")
    if keep_intermediate:
        return results
    last = results[-1]
    return [CompressionResult(last.model, {**last.report, "steps": [r.report for r in results]})]
