"""Chains of compression steps (a recipe), e.g. prune 30% -> distill -> int8.

Every step receives the previous step's model; the teacher of every step that distils is the
chain's input model (the fp32 parent), unless ``data.teacher`` names another one. Each step gets
its own work dir (``step{i}_{method}``, so checkpoints of a killed chain are found again) and its
own slice of the progress bar.

With ``data.held_out``, a prune / lowrank step without a target first searches one within its
budget, and every step's result is judged against the step's input on the held-out crops
(:func:`~pose_core.compression.budget.judge`, in the step's report under ``budget``); a step
over budget with ``on_over_budget: fail`` stops the chain with :class:`OverBudgetError`.

A finished step's result is saved under ``<work dir>/step{i}_{method}/result/`` (a GraphModel as
recipe + safetensors, an ONNX graph as bytes, the torch form of an ONNX upload as the ONNX
graph it exports to, converted again on load; the report as JSON; written to a temp dir and
renamed, so it is complete or absent). A re-run with the same work dir and recipe (a killed
worker's job, re-delivered) loads finished steps instead of running them again. Results that
cannot be stored without pickle (other torch modules) are not saved.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pose_core.compression.base import CompressibleModel, CompressionResult, OnnxModel
from pose_core.compression.budget import OverBudgetError, judge, over_budget_message
from pose_core.compression.configs import MethodConfig
from pose_core.compression.data import CompressionData, CropSet
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
    ran: list[MethodConfig] = []  #: the steps as run (searched targets set)
    onnx_of = _onnx_cache(data.train)
    current = model
    for index, config in enumerate(configs):
        start = time.monotonic()
        step_data = replace(
            data.for_step(
                f"step{index}_{config.method}", index / len(configs), (index + 1) / len(configs)
            ),
            teacher=None if isinstance(teacher, OnnxModel) else teacher,
        )
        saved = _load_step(step_data.work_dir, configs[: index + 1])
        if saved is not None:
            logger.info(
                "recipe step %d/%d: %s, finished before", index + 1, len(configs), config.method
            )
            ran = parse_recipe(saved.report["lineage"]["recipe"])
            results.append(saved)
            current = saved.model
            continue
        logger.info("recipe step %d/%d: %s", index + 1, len(configs), config.method)
        resolved, search = _resolve_target(current, config, step_data)
        result = compress(current, resolved, step_data)
        report = {**result.report, **({"target_search": search} if search else {})}
        if data.held_out is not None:
            report["budget"] = check = judge(
                onnx_of(result.model),
                onnx_of(current),
                resolved.budget,
                data.held_out,
                data.latency_rounds,
                data.pose,
            )
            if not check["within_budget"] and resolved.budget.on_over_budget == "fail":
                raise OverBudgetError(over_budget_message(index, resolved.method, check))
        ran.append(resolved)
        report.update(
            step_wall_time_s=time.monotonic() - start,
            lineage={"step": index, "of": len(configs), "recipe": _steps_key(ran)},
        )
        results.append(CompressionResult(result.model, report))
        _save_step(step_data.work_dir, configs[: index + 1], results[-1], onnx_of)
        current = result.model
    data.progress(1.0, "recipe done")
    if keep_intermediate:
        return results
    last = results[-1]
    return [CompressionResult(last.model, {**last.report, "steps": [r.report for r in results]})]


def training_steps(report: Mapping[str, Any]) -> int:
    """Training steps a result's report says were run (every distillation / QAT run in it;
    a chain's report counts its ``steps`` once)."""
    if isinstance(report.get("steps"), list):
        return sum(training_steps(step) for step in report["steps"])

    def walk(node: Any) -> int:
        if isinstance(node, Mapping):
            if isinstance(node.get("steps_done"), int):
                return int(node["steps_done"])
            return sum(walk(v) for v in node.values())
        return sum(walk(v) for v in node) if isinstance(node, list) else 0

    return walk(report)


def _resolve_target(
    model: CompressibleModel, config: MethodConfig, data: CompressionData
) -> tuple[MethodConfig, dict[str, Any] | None]:
    """``config`` with a searched target when it has none (prune / lowrank; see
    :mod:`~pose_core.compression.target_search`)."""
    from pose_core.compression.target_search import needs_search, search_target

    if not needs_search(config):
        return config, None
    return search_target(model, config, data)  # type: ignore[arg-type]


def _onnx_cache(crops: CropSet) -> Callable[[CompressibleModel], bytes]:
    """ONNX bytes of a step's model, exported once per model object."""
    from pose_core.compression.measure import example_input, onnx_bytes_of

    cache: dict[int, tuple[CompressibleModel, bytes]] = {}

    def onnx_of(model: CompressibleModel) -> bytes:
        if id(model) not in cache:
            cache[id(model)] = (model, onnx_bytes_of(model, example_input(crops)))
        return cache[id(model)][1]

    return onnx_of


RESULT_DIR = "result"
_ONNX_FILE, _REPORT_FILE = "model.onnx", "report.json"
#: a converted ONNX upload's torch form, as ONNX (:mod:`pose_core.importers.onnx_torch`)
_TORCH_FORM_FILE = "torch_form.onnx"


def _steps_key(steps: Sequence[MethodConfig]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in steps]


def _save_step(
    step_dir: Path,
    steps: Sequence[MethodConfig],
    result: CompressionResult,
    onnx_of: Callable[[CompressibleModel], bytes],
) -> None:
    """Store a finished step's result under ``step_dir/result`` (see the module docstring);
    ``steps`` is the recipe up to this step (a result is only reused after the same ones)."""
    from pose_core.importers.onnx_torch import is_converted_onnx
    from pose_core.models.graph import GraphModel, save_graph_model

    model = result.model
    if not isinstance(model, OnnxModel | GraphModel) and not is_converted_onnx(model):
        logger.info("step result %s is not saved: no pickle-free form", type(model).__name__)
        return
    final = step_dir / RESULT_DIR
    tmp = step_dir / f"{RESULT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names: dict[str, Any] = {}
    if isinstance(model, OnnxModel):
        (tmp / _ONNX_FILE).write_bytes(model.onnx_bytes)
        names = {"input_names": model.input_names, "output_names": model.output_names}
    elif isinstance(model, GraphModel):
        save_graph_model(model, tmp)
    else:
        (tmp / _TORCH_FORM_FILE).write_bytes(onnx_of(model))
    payload = {"steps": _steps_key(steps), "report": result.report, **names}
    (tmp / _REPORT_FILE).write_text(json.dumps(payload, default=str), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _load_step(step_dir: Path, steps: Sequence[MethodConfig]) -> CompressionResult | None:
    """The result :func:`_save_step` stored after exactly these ``steps``, or ``None``."""
    from pose_core.models.graph import GraphRecipeError, load_graph_model

    folder = step_dir / RESULT_DIR
    try:
        payload = json.loads((folder / _REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if payload.get("steps") != _steps_key(steps):
        logger.warning("ignoring the saved result in %s: another recipe", folder)
        return None
    model: CompressibleModel
    if (folder / _ONNX_FILE).exists():
        model = OnnxModel(
            (folder / _ONNX_FILE).read_bytes(),
            tuple(payload.get("input_names", ())),
            tuple(payload.get("output_names", ())),
        )
    elif (folder / _TORCH_FORM_FILE).exists():
        from pose_core.importers.onnx_torch import TorchFormUnavailable, onnx_to_torch

        try:
            model = onnx_to_torch((folder / _TORCH_FORM_FILE).read_bytes())
        except (TorchFormUnavailable, OSError) as exc:
            logger.warning("ignoring the saved result in %s: %s", folder, exc)
            return None
    else:
        try:
            model = load_graph_model(folder)
        except (GraphRecipeError, OSError) as exc:
            logger.warning("ignoring the saved result in %s: %s", folder, exc)
            return None
    return CompressionResult(model, payload["report"])
