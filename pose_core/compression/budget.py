"""The budget check of a compression step: its result against its input on held-out crops.

``judge(candidate_onnx, parent_onnx, budget, held_out, latency_rounds)`` measures the result's
fidelity to its input (mean COCO-17 keypoint px, mean OKS) on the held-out crops and the
interleaved latency ratio, and returns the verdict that goes into the version's report::

    {"within_budget": false, "measured": {"mean_px": 6.1, "oks_vs_parent": 0.83,
     "latency_ratio": 0.8, "latency_noise": 0.03}, "limits": {...}, "over": ["mean_px 6.1 > 4"],
     "held_out": {"n_crops": 20, "n_images": 12, ...}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pose_core.compression.base import CompressionError
from pose_core.compression.configs import Budget
from pose_core.compression.data import HeldOut
from pose_core.compression.pose_format import BLAZEPOSE_FORMAT, PoseFormat


class OverBudgetError(CompressionError):
    """A step's result is over its budget and the budget says ``on_over_budget: fail``."""


def measure(
    candidate_onnx: bytes,
    parent_onnx: bytes,
    held_out: HeldOut,
    latency_rounds: int,
    pose: PoseFormat = BLAZEPOSE_FORMAT,
) -> dict[str, Any]:
    """Fidelity (held-out crops, outputs decoded as ``pose`` says) and latency ratio of
    ``candidate_onnx`` to ``parent_onnx``, with the ratio's noise (``latency_noise``: the
    parent against itself in the same rounds)."""
    from pose_core.compression.measure import ort_session, run_session, session_latency
    from pose_core.evaluation.latency import median_ratio

    images = held_out.crops.images
    cand, parent = ort_session(candidate_onnx), ort_session(parent_onnx)
    fidelity = pose.fidelity(
        run_session(cand, images),
        run_session(parent, images),
        (images.shape[-2], images.shape[-1]),
        held_out=True,
    )
    # a second session of the parent in the same rounds: how far the ratio of two identical
    # graphs strays is this measurement's noise (0.88-1.13 on 2 cores shared by 7 jobs)
    sessions = [cand, parent, ort_session(parent_onnx)]
    lat_c, lat_p, lat_again = session_latency(sessions, images[:1], latency_rounds)
    return {
        "mean_px": fidelity["mean_landmark_px"],
        "oks_vs_parent": fidelity["mean_oks_vs_parent"],
        "latency_ratio": median_ratio(lat_c, lat_p),
        "latency_noise": abs(median_ratio(lat_again, lat_p) - 1.0),
    }


def verdict(budget: Budget, measured: Mapping[str, Any], held_out: HeldOut) -> dict[str, Any]:
    """Compare ``measured`` (see :func:`measure`) with the budget's limits; the latency limit
    is ``max_latency_ratio`` plus the larger of ``latency_tolerance`` and the measured noise."""
    noise = max(budget.latency_tolerance, float(measured.get("latency_noise") or 0.0))
    latency_limit = None if budget.max_latency_ratio is None else budget.max_latency_ratio + noise
    checks = (
        ("mean_px", budget.max_mean_px, lambda v, lim: v <= lim, ">"),
        ("oks_vs_parent", budget.min_oks_vs_parent, lambda v, lim: v >= lim, "<"),
        ("latency_ratio", latency_limit, lambda v, lim: v <= lim, ">"),
    )
    over = [
        f"{key} {measured[key]:.3f} {sign} {limit:.3g}"
        for key, limit, ok, sign in checks
        if limit is not None and measured.get(key) is not None and not ok(measured[key], limit)
    ]
    return {
        "within_budget": not over,
        "measured": dict(measured),
        "limits": budget.model_dump(mode="json"),
        "over": over,
        "held_out": held_out.describe(),
    }


def judge(
    candidate_onnx: bytes,
    parent_onnx: bytes,
    budget: Budget,
    held_out: HeldOut,
    latency_rounds: int,
    pose: PoseFormat = BLAZEPOSE_FORMAT,
) -> dict[str, Any]:
    """The verdict of a result (see the module docstring)."""
    measured = measure(candidate_onnx, parent_onnx, held_out, latency_rounds, pose)
    return verdict(budget, measured, held_out)


#: what to try when a limit is exceeded, by method
ADVICE: dict[str, dict[str, str]] = {
    "quantize": {
        "accuracy": "try mode 'fp16_weights', a higher 'percentile', more 'max_fp32_nodes' "
        "or 'qat_steps'",
        "latency": "allow fewer fp32 nodes ('max_fp32_nodes'), re-run on a quieter machine "
        "or raise budget.max_latency_ratio",
    },
    "prune": {
        "accuracy": "try a higher 'target_macs_ratio' (or none: the job searches one), longer "
        "'recovery' or a larger dataset",
        "latency": "keep 'round_to' at 8 or 16 so that ONNX Runtime's kernels stay fast",
    },
    "lowrank": {
        "accuracy": "try a higher 'params_ratio' (or none: the job searches one), longer "
        "'recovery' or a larger dataset",
        "latency": "factorized layers add convs: raise 'min_saving' or use 'prune'",
    },
    "distill": {
        "accuracy": "try fewer 'steps', a lower 'lr' or a larger dataset",
        "latency": "distillation does not change the graph: re-measure on a quieter machine",
    },
}


def over_budget_message(step: int, method: str, check: Mapping[str, Any]) -> str:
    """What was measured and what to try, for a step over its budget."""
    advice = ADVICE.get(method, {})
    hints = [
        advice[kind]
        for kind in ("accuracy", "latency")
        if kind in advice
        and any(o.startswith("latency") == (kind == "latency") for o in check["over"])
    ]
    held = check["held_out"]
    measured = ", ".join(
        f"{key} {value:.3f}" for key, value in check["measured"].items() if value is not None
    )
    return (
        f"step {step} ({method}) is over its budget on {held['n_crops']} held-out crops "
        f"({held['n_images']} images): {'; '.join(check['over'])} (measured {measured}). "
        + " ".join(f"To fix: {h}." for h in hints)
        + ' Or set budget.on_over_budget to "keep" to store it marked over budget.'
    )


def combined(checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One verdict for a chain stored as one version: within budget when every step is."""
    return {"within_budget": all(c["within_budget"] for c in checks), "steps": list(checks)}
