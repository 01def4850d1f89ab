"""A budgeted search across techniques: candidates, each measured the same way, a Pareto front.

``optimize(model, data, target)`` tries, while ``target.time_budget_s`` lasts: FP16 weights,
INT8 (fp32 fallback within budget), prune and lowrank at the most compression within the
accuracy target (their budget-driven target search), and INT8 on each torch result (chains).
Every candidate is measured against ``model`` on the held-out crops (fidelity, latency ratio),
by its ONNX size and, when ``accuracy`` is given, by AP on the labelled eval dataset. A
candidate is on the Pareto front when no other point (the parent included) is at least as good
on the objective and on accuracy and better on one (latency ratios within the measured noise
tie, and the other ratio breaks the tie); the recommendation is the best objective
among the candidates that meet the target and are not slower than the parent (within the
measured noise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pose_core.compression.base import CompressibleModel, CompressionError, CompressionResult
from pose_core.compression.budget import measure
from pose_core.compression.configs import Budget
from pose_core.compression.data import CompressionData

logger = logging.getLogger(__name__)

Objective = Literal["latency", "size"]
#: seconds a torch candidate needs at least (target search + some recovery) to be worth starting
MIN_TORCH_CANDIDATE_S = 30.0


@dataclass(frozen=True)
class OptimizeTarget:
    objective: Objective = "latency"
    min_oks_vs_parent: float | None = None  #: on the held-out crops
    max_ap_loss: float | None = None  #: AP on the eval dataset (needs ``accuracy``)
    time_budget_s: float = 1800.0


@dataclass(frozen=True)
class Plan:
    name: str
    steps: list[dict[str, Any]]
    base: str | None = None  #: run on the result of this candidate (a chain)
    trains: bool = False  #: has a recovery whose time the budget shares out


@dataclass
class Candidate:
    name: str
    recipe: list[dict[str, Any]]  #: the steps as run, from the parent
    result: CompressionResult | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)  #: each step's budget verdict
    row: dict[str, Any] = field(default_factory=dict)  #: the table row (JSON)


def plans(budget: Budget, torch_form: bool) -> list[Plan]:
    """The candidates tried, cheapest first (torch ones only for a model with a torch form)."""
    b = budget.model_dump(mode="json")
    listed = [
        Plan("fp16", [{"method": "quantize", "mode": "fp16_weights", "budget": b}]),
        Plan("int8", [{"method": "quantize", "budget": b}]),
    ]
    if torch_form:
        listed += [
            Plan("prune", [{"method": "prune", "budget": b}], trains=True),
            Plan("prune+int8", [{"method": "quantize", "budget": b}], base="prune"),
            Plan("lowrank", [{"method": "lowrank", "budget": b}], trains=True),
            Plan("lowrank+int8", [{"method": "quantize", "budget": b}], base="lowrank"),
        ]
    return listed


def candidate_budget(target: OptimizeTarget) -> Budget:
    """Every candidate step's budget: the OKS target (or the default), results kept."""
    if target.min_oks_vs_parent is None:
        return Budget(on_over_budget="keep")
    return Budget(
        max_mean_px=None, min_oks_vs_parent=target.min_oks_vs_parent, on_over_budget="keep"
    )


def optimize(
    model: CompressibleModel,
    data: CompressionData,
    target: OptimizeTarget,
    *,
    torch_form: bool,
    onnx_of: Callable[[CompressibleModel], bytes],
    accuracy: Callable[[bytes], float] | None = None,
) -> tuple[list[Candidate], dict[str, Any]]:
    """Every candidate (with its table row) and the parent's row; rows gain ``pareto`` and
    ``meets_target``, and the recommended one ``recommended: true``."""
    from pose_core.compression.pipeline import run_recipe

    if data.held_out is None:
        raise CompressionError("optimize needs held-out crops")
    started = time.monotonic()
    parent_onnx = onnx_of(model)
    parent_ap = accuracy(parent_onnx) if accuracy is not None else None
    parent_row = {
        "name": "parent",
        "latency_ratio": 1.0,
        "size_ratio": 1.0,
        "oks_vs_parent": 1.0,
        "mean_px": 0.0,
        "ap": parent_ap,
    }
    listed = plans(candidate_budget(target), torch_form)
    done: dict[str, Candidate] = {}
    took: dict[str, float] = {}  # seconds of the last untrained candidate of each kind
    for index, plan in enumerate(listed):
        now = time.monotonic()
        remaining = target.time_budget_s - (now - started)
        kind = "+".join(f"{s['method']}:{s.get('mode', '')}" for s in plan.steps)
        candidate = Candidate(plan.name, [])
        done[plan.name] = candidate
        base = done.get(plan.base) if plan.base else None
        if plan.base and (base is None or base.result is None):
            candidate.row = {"name": plan.name, "skipped": f"no {plan.base} result"}
            continue
        # an untrained candidate that took longer than what is left would overrun the budget
        if remaining <= (MIN_TORCH_CANDIDATE_S if plan.trains else took.get(kind, 0.0)):
            candidate.row = {"name": plan.name, "skipped": "time budget spent"}
            continue
        steps = _with_recovery_time(plan, remaining, listed[index:])
        data.progress(index / len(listed), f"candidate {plan.name}")
        start_model = base.result.model if base is not None and base.result else model
        try:
            result = run_recipe(
                start_model,
                steps,
                data.for_step(plan.name, index / len(listed), (index + 1) / len(listed)),
                keep_intermediate=False,
            )[0]
        except CompressionError as exc:
            logger.info("optimize: candidate %s failed: %s", plan.name, exc)
            candidate.row = {"name": plan.name, "error": str(exc)}
            continue
        candidate.result = result
        took[kind] = time.monotonic() - now
        candidate.recipe = (base.recipe if base is not None else []) + list(
            result.report["lineage"]["recipe"]
        )
        candidate.checks = (base.checks if base is not None else []) + [
            step["budget"] for step in result.report["steps"]
        ]
        onnx = onnx_of(result.model)
        measured = measure(onnx, parent_onnx, data.held_out, data.latency_rounds)
        candidate.row = {
            "name": plan.name,
            "recipe": candidate.recipe,
            "latency_ratio": measured["latency_ratio"],
            "size_ratio": len(onnx) / len(parent_onnx),
            "oks_vs_parent": measured["oks_vs_parent"],
            "mean_px": measured["mean_px"],
            "latency_noise": measured["latency_noise"],
            "ap": accuracy(onnx) if accuracy is not None else None,
            "wall_time_s": round(time.monotonic() - started, 1),
        }
    measured_rows = [c.row for c in done.values() if c.result is not None]
    _mark(measured_rows, parent_row, target)
    return list(done.values()), parent_row


def _with_recovery_time(
    plan: Plan, remaining: float, still_to_run: Sequence[Plan]
) -> list[dict[str, Any]]:
    """A training plan's recovery gets an equal share of the time left among the training
    plans still to run (half of it: the search probes and the measuring need the rest)."""
    if not plan.trains:
        return plan.steps
    share = remaining / max(sum(p.trains for p in still_to_run), 1) / 2
    return [{**s, "recovery": {"time_budget_s": max(share, 1.0)}} for s in plan.steps]


def _accuracy_of(row: dict[str, Any], target: OptimizeTarget) -> float:
    key = "ap" if target.max_ap_loss is not None else "oks_vs_parent"
    return float(row[key])


def _latency_tolerance(*rows: dict[str, Any]) -> float:
    """Latency ratios closer than this are the same speed (the measured noise, or the default)."""
    noises = [float(r.get("latency_noise") or 0.0) for r in rows]
    return max([Budget().latency_tolerance, *noises])


def _better(a: dict[str, Any], b: dict[str, Any], key: str) -> int:
    """1 / 0 / -1: ``a`` is better / the same / worse than ``b`` on the objective ``key``; a tie
    (latency within the noise) is broken by the other ratio (size or latency)."""
    for k in (key, "size_ratio" if key == "latency_ratio" else "latency_ratio"):
        tolerance = _latency_tolerance(a, b) if k == "latency_ratio" else 0.0
        if abs(a[k] - b[k]) > tolerance:
            return 1 if a[k] < b[k] else -1
    return 0


def _dominates(a: dict[str, Any], b: dict[str, Any], key: str, target: OptimizeTarget) -> bool:
    objective, accuracy = _better(a, b, key), _accuracy_of(a, target) - _accuracy_of(b, target)
    return objective >= 0 and accuracy >= 0 and (objective > 0 or accuracy > 0)


def _mark(rows: list[dict[str, Any]], parent: dict[str, Any], target: OptimizeTarget) -> None:
    key = "latency_ratio" if target.objective == "latency" else "size_ratio"
    points = [*rows, parent]
    for row in rows:
        row["pareto"] = not any(
            other is not row and _dominates(other, row, key, target) for other in points
        )
        if target.max_ap_loss is not None:
            row["meets_target"] = parent["ap"] - row["ap"] <= target.max_ap_loss
        else:
            oks = target.min_oks_vs_parent if target.min_oks_vs_parent is not None else 0.0
            row["meets_target"] = row["oks_vs_parent"] >= oks
        noise = _latency_tolerance(row)
        row["meets_target"] = bool(row["meets_target"] and row["latency_ratio"] <= 1 + noise)
    eligible = [r for r in rows if r["meets_target"] and r["pareto"]]
    if eligible:
        other = "size_ratio" if key == "latency_ratio" else "latency_ratio"
        best = min(eligible, key=lambda r: (r[key], r[other], -_accuracy_of(r, target)))
        best["recommended"] = True
