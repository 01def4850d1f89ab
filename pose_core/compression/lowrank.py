"""Low-rank decomposition (SVD of 1x1 convs / linears, Tucker-2 of k x k convs), then recovery.

Each decomposed layer is replaced IN ITS PARENT by an ``nn.Sequential`` of plain layers, so a
``GraphModel`` recipe describes the result. Depthwise and grouped convs are never factorized, and
a layer is skipped when its factorization would not save at least ``min_saving`` of its parameters.
Ranks come from the retained spectral energy per layer (``energy``) or from one energy threshold
shared by every layer and searched so that the whole model fits ``params_ratio``.

With ``basis="activations"`` the output basis of each factorization (and the spectrum its rank is
read from) comes from the layer's output second moment on a few crops instead of its weights: the
rank-r layer that best reproduces the layer's actual outputs (``W' = U_r U_r^T W`` with ``U`` the
eigenvectors of ``E[(Wx)(Wx)^T]``), so directions the data never excites cost no rank.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pose_core.compression.base import CompressionError, CompressionResult
from pose_core.compression.configs import LowRankConfig
from pose_core.compression.data import CompressionData
from pose_core.compression.distill import frozen_copy, recover
from pose_core.compression.lowrank_layers import svd_layers, tucker2_layers
from pose_core.compression.measure import count_macs_params, example_input
from pose_core.compression.refit import Targets, refit_pointwise
from pose_core.compression.registry import register
from pose_core.compression.target_search import needs_search

logger = logging.getLogger(__name__)


@dataclass
class _Candidate:
    name: str
    module: nn.Conv2d | nn.Linear
    spectra: list[torch.Tensor]  # singular values: [S] for SVD, [S_out, S_in] for Tucker-2
    #: orthonormal output basis (out, out), strongest first; None = the weights' own SVD
    out_basis: torch.Tensor | None = None

    @property
    def params(self) -> int:
        return int(self.module.weight.numel())

    def ranks(self, energy: float, round_to: int = 1) -> list[int]:
        return [
            min(-(-_rank_for_energy(s, energy) // round_to) * round_to, len(s))
            for s in self.spectra
        ]

    def factored_params(self, ranks: list[int]) -> int:
        w = self.module.weight
        out_ch, in_ch = w.shape[0], w.shape[1]
        kernel = int(w[0, 0].numel()) if w.dim() == 4 else 1
        if len(ranks) == 1:
            return ranks[0] * (in_ch * kernel + out_ch)
        r_out, r_in = ranks
        return in_ch * r_in + r_in * r_out * kernel + r_out * out_ch


def _rank_for_energy(singular: torch.Tensor, energy: float) -> int:
    cumulative = torch.cumsum(singular**2, 0) / (singular**2).sum().clamp_min(1e-12)
    return int(min(int((cumulative < energy).sum().item()) + 1, len(singular)))


@torch.no_grad()
def output_moments(
    model: nn.Module, names: list[str], images: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per layer name: the second moment (out, out) of its output without bias, over every
    output pixel of ``images`` (float64); a linear layer's features are its output's last
    axis (it may read an N x K x C tensor: SimCC classifiers)."""
    modules = dict(model.named_modules())
    moments: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:

        def accumulate(mod: nn.Module, inp: Any, out: torch.Tensor, key: str = name) -> None:
            bias = getattr(mod, "bias", None)
            if isinstance(mod, nn.Linear):
                y = out if bias is None else out - bias
            else:
                y = out if bias is None else out - bias.reshape(1, -1, *([1] * (out.dim() - 2)))
                y = y.movedim(1, -1)
            flat = y.reshape(-1, y.shape[-1]).double()
            moments[key] = moments.get(key, 0) + flat.T @ flat

        hooks.append(modules[name].register_forward_hook(accumulate))
    try:
        model.eval()(images)
    finally:
        for h in hooks:
            h.remove()
    return moments


def _activation_basis(cand: _Candidate, moment: torch.Tensor) -> None:
    """Replace the output spectrum and basis of ``cand`` by those of its output moment."""
    eigvals, eigvecs = torch.linalg.eigh(moment)
    order = torch.argsort(eigvals, descending=True)
    cand.spectra[0] = eigvals[order].clamp_min(0).sqrt().float()
    cand.out_basis = eigvecs[:, order].float()


def _candidates(model: nn.Module, cfg: LowRankConfig) -> list[_Candidate]:
    found = []
    for name, module in model.named_modules():
        if any(name.startswith(p) for p in cfg.ignored_layers):
            continue
        w = module.weight.detach() if isinstance(module, nn.Conv2d | nn.Linear) else None
        if w is None:
            continue
        if isinstance(module, nn.Linear) or (
            isinstance(module, nn.Conv2d) and module.groups == 1 and w.shape[2:].numel() == 1
        ):
            found.append(
                _Candidate(name, module, [torch.linalg.svdvals(w.reshape(w.shape[0], -1))])
            )
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and cfg.tucker_kxk:
            s_out = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
            s_in = torch.linalg.svdvals(w.transpose(0, 1).reshape(w.shape[1], -1))
            found.append(_Candidate(name, module, [s_out, s_in]))
    return found


def _plan(
    cands: list[_Candidate], energy: float, min_saving: float, round_to: int = 1
) -> dict[str, list[int]]:
    plan = {}
    for c in cands:
        ranks = c.ranks(energy, round_to)
        if c.factored_params(ranks) <= (1 - min_saving) * c.params:
            plan[c.name] = ranks
    return plan


def _planned_params(cands: list[_Candidate], plan: dict[str, list[int]], total: int) -> int:
    return total - sum(c.params - c.factored_params(plan[c.name]) for c in cands if c.name in plan)


def _search_energy(cands: list[_Candidate], cfg: LowRankConfig, total: int) -> float:
    """Largest shared energy whose plan keeps the model within ``params_ratio`` (bisection)."""
    target = float(cfg.params_ratio or 1.0) * total
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if _planned_params(cands, _plan(cands, mid, cfg.min_saving, cfg.round_to), total) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def decompose(
    model: nn.Module, cfg: LowRankConfig, total_params: int, images: torch.Tensor | None = None
) -> dict[str, Any]:
    """Factorize ``model`` IN PLACE as ``cfg`` says; returns the plan (layer -> ranks).

    ``images`` (a few input crops) are needed for ``cfg.basis == "activations"``."""
    cands = _candidates(model, cfg)
    if cfg.basis == "activations":
        if images is None:
            raise CompressionError("low-rank basis 'activations' needs input crops")
        moments = output_moments(model, [c.name for c in cands], images)
        for c in cands:
            _activation_basis(c, moments[c.name])
    energy = (
        float(cfg.energy) if cfg.energy is not None else _search_energy(cands, cfg, total_params)
    )
    plan = _plan(cands, energy, cfg.min_saving, cfg.round_to)
    by_name = {c.name: c for c in cands}
    for name, ranks in plan.items():
        module = by_name[name].module
        basis = by_name[name].out_basis
        if len(ranks) == 1:
            replacement = svd_layers(module, ranks[0], basis)
        else:
            assert isinstance(module, nn.Conv2d)
            replacement = tucker2_layers(module, ranks[0], ranks[1], basis)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, replacement)
    return {"energy": energy, "layers": {n: r for n, r in plan.items()}, "candidates": len(cands)}


def _refit_targets(student: nn.Module, decomposed: dict[str, list[int]]) -> Targets:
    """Every dense conv against the parent's conv of the same name; a factorized layer's last
    conv against the parent's original layer."""
    targets: dict[str, tuple[str, torch.Tensor | None]] = {}
    for name, module in student.named_modules():
        if name in decomposed and isinstance(module, nn.Sequential):
            targets[f"{name}.{len(module) - 1}"] = (name, None)
        elif isinstance(module, nn.Conv2d) and not any(
            name.startswith(f"{d}.") for d in decomposed
        ):
            targets[name] = (name, None)
    return targets


@register(LowRankConfig)
def lowrank(model: Any, config: LowRankConfig, data: CompressionData) -> CompressionResult:
    """Decompose a copy of ``model`` (a torch model: :func:`~pose_core.compression.registry.
    compress` checks) and recover it by distillation from ``model`` itself."""
    if needs_search(config):
        raise CompressionError("lowrank needs a target here; run_recipe searches one within budget")
    teacher = frozen_copy(data.teacher if data.teacher is not None else model)
    student = copy.deepcopy(model)
    example = example_input(data.train)
    macs0, params0 = count_macs_params(student, example)
    with torch.no_grad():
        crops = data.train.tensor(data.train.spread(config.refit_crops))
        plan = decompose(student, config, params0, crops)
    if not plan["layers"]:
        logger.warning(
            "low-rank: no layer saves %.0f%% of its parameters; model unchanged",
            100 * config.min_saving,
        )
    macs1, params1 = count_macs_params(student, example)
    if config.refit and plan["layers"]:
        plan["refit"] = refit_pointwise(
            student,
            frozen_copy(model),
            data.train,
            _refit_targets(student, plan["layers"]),
            num_crops=config.refit_crops,
        )
    for p in student.parameters():
        p.requires_grad_(True)
    stats = recover(student, teacher, config.recovery, data.for_step("lowrank", 0.02, 1.0))
    report = {
        "method": "lowrank",
        "config": config.model_dump(mode="json"),
        "decomposition": {
            **plan,
            "macs_before": macs0,
            "macs_after": macs1,
            "params_before": params0,
            "params_after": params1,
        },
        "recovery": stats,
    }
    return CompressionResult(student, report)
