"""Budget-driven targets of ``prune`` / ``lowrank``: a step without a target gets the most
compression whose fast proxy stays within its budget.

The proxy of a global target is the step itself run with no recovery (channels pruned or
layers factorized, then the least-squares refit), scored on the held-out crops against the
step's input. Refit alone is pessimistic (recovery only improves on it), so the target found is
safe to recover from. Bisection on the target between ``search.lowest`` and
``search.highest``, ``search.probes`` probes; a target the method cannot reach counts as over.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from pose_core.compression.base import CompressionError
from pose_core.compression.budget import verdict
from pose_core.compression.configs import LowRankConfig, MethodConfig, PruneConfig
from pose_core.compression.data import CompressionData, CropSet
from pose_core.compression.registry import compress

logger = logging.getLogger(__name__)

#: config field that the search sets, by config type
TARGET_FIELD: dict[type[MethodConfig], str] = {
    PruneConfig: "target_macs_ratio",
    LowRankConfig: "params_ratio",
}


def needs_search(config: MethodConfig) -> bool:
    """A prune / lowrank config with no target of its own."""
    if isinstance(config, PruneConfig):
        return config.ratio is None and config.target_macs_ratio is None
    if isinstance(config, LowRankConfig):
        return config.energy is None and config.params_ratio is None
    return False


def _outputs(model: torch.nn.Module, crops: CropSet) -> list[np.ndarray]:
    """Every output of ``model`` over the crops, concatenated on the batch axis."""
    from pose_core.compression.distill_loss import output_tensors

    model.eval()
    with torch.no_grad():
        chunks = [output_tensors(model(torch.from_numpy(batch))) for batch in crops.batches(8)]
    return [torch.cat([c[k] for c in chunks]).numpy() for k in range(len(chunks[0]))]


def search_target(
    model: torch.nn.Module, config: PruneConfig | LowRankConfig, data: CompressionData
) -> tuple[MethodConfig, dict[str, Any]]:
    """The config with its target set, and the search's report (every probe)."""
    held_out = data.held_out
    if held_out is None:
        raise CompressionError("a budget-driven target search needs held-out crops")
    field = TARGET_FIELD[type(config)]
    search = config.search
    reference = _outputs(model, held_out.crops)
    crop_hw = (held_out.crops.images.shape[-2], held_out.crops.images.shape[-1])
    fast_budget = config.budget.model_copy(update={"max_latency_ratio": None})
    probes: list[dict[str, Any]] = []

    def within(target: float) -> bool:
        probe = _with_target(config, field, target, recovery_steps=0)
        index = len(probes)
        data.progress(index / (search.probes + 1), f"searching {field}: probe {target:.3f}")
        try:
            result = compress(model, probe, data.for_step(f"search{index}", 0, 0))
        except CompressionError as exc:
            probes.append({field: target, "reachable": False, "error": str(exc)})
            return False
        assert isinstance(result.model, torch.nn.Module)
        fidelity = data.pose.fidelity(
            _outputs(result.model, held_out.crops), reference, crop_hw, held_out=True
        )
        measured = {
            "mean_px": fidelity["mean_landmark_px"],
            "oks_vs_parent": fidelity["mean_oks_vs_parent"],
        }
        ok = bool(verdict(fast_budget, measured, held_out)["within_budget"])
        probes.append({field: target, "within_budget": ok, **measured})
        logger.info("target search %s=%.3f: %s", field, target, probes[-1])
        return ok

    hi, lo = search.highest, search.lowest
    if not within(hi):
        raise CompressionError(
            f"{config.method}: even {field}={hi} is over budget after refit on "
            f"{len(held_out.crops)} held-out crops ({probes[-1]}); raise budget.max_mean_px "
            "or lower budget.min_oks_vs_parent, or give a target of your own"
        )
    best = hi
    if search.probes > 1 and within(lo):
        best = lo
    else:
        for _ in range(search.probes - 2):
            mid = (lo + hi) / 2
            if within(mid):
                best = hi = mid
            else:
                lo = mid
    report = {"field": field, "chosen": round(best, 4), "probes": probes}
    return _with_target(config, field, round(best, 4), recovery_steps=None), report


def _with_target(
    config: PruneConfig | LowRankConfig, field: str, target: float, recovery_steps: int | None
) -> MethodConfig:
    raw = config.model_dump()
    raw[field] = target
    if recovery_steps is not None:
        raw["recovery"] = {**raw["recovery"], "steps": recovery_steps, "guard_crops": 0}
    return type(config).model_validate(raw)
