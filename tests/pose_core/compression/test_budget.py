"""Budgets of compression steps: the held-out split, the verdict, a chain stopped or kept by
it, and the Pareto marking of the optimize candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
from compression_tiny import random_crops, tiny_pose_model

from pose_core.compression.budget import OverBudgetError, verdict
from pose_core.compression.configs import Budget
from pose_core.compression.crops import build_split
from pose_core.compression.data import CompressionData, HeldOut
from pose_core.compression.optimize import OptimizeTarget, _mark
from pose_core.compression.pipeline import run_recipe

DEV_SUBSET = Path(__file__).parents[2] / "data" / "dev_subset"
HELD = HeldOut(random_crops(3, seed=1), ("a.jpg",))


def test_split_holds_whole_images_out_deterministically() -> None:
    train, held = build_split([DEV_SUBSET], holdout_fraction=0.3, seed=0)
    again_train, again = build_split([DEV_SUBSET], holdout_fraction=0.3, seed=5)
    assert held.images == again.images and len(held.images) == 1  # 1 of 3 photos
    assert (held.crops.images == again.crops.images).all()  # plain crops: seed-independent
    assert len(train) == len(again_train)
    everything, rest = build_split([DEV_SUBSET], holdout_fraction=0.01)
    assert len(train) + len(held.crops) == len(everything) + len(rest.crops)
    assert held.describe()["n_crops"] == len(held.crops) > 0


def test_verdict_names_every_limit_exceeded() -> None:
    budget = Budget(max_mean_px=2.0, min_oks_vs_parent=0.9, max_latency_ratio=1.0)
    measured = {"mean_px": 3.5, "oks_vs_parent": 0.95, "latency_ratio": 1.2, "latency_noise": 0}
    check = verdict(budget, measured, HELD)
    assert check["within_budget"] is False
    assert check["over"] == ["mean_px 3.500 > 2", "latency_ratio 1.200 > 1.05"]
    noisy = verdict(budget, {**measured, "latency_noise": 0.25}, HELD)
    assert noisy["over"] == ["mean_px 3.500 > 2"]  # 1.2 is within the noise of 1.0
    assert check["held_out"]["n_crops"] == 3 and check["measured"] == measured
    loose = Budget(max_mean_px=None, min_oks_vs_parent=0.9, max_latency_ratio=None)
    assert verdict(loose, measured, HELD)["within_budget"] is True


def _data(tmp_path: Path) -> CompressionData:
    return CompressionData(
        train=random_crops(8), work_dir=tmp_path, held_out=HELD, latency_rounds=2
    )


INT8 = {"method": "quantize", "num_calibration_crops": 4, "num_holdout_crops": 2}
IMPOSSIBLE = {"max_mean_px": 1e-9, "min_oks_vs_parent": None, "max_latency_ratio": None}


def test_a_step_over_budget_stops_the_chain_or_is_kept_marked(tmp_path: Path) -> None:
    step = {**INT8, "max_fp32_nodes": 0, "budget": IMPOSSIBLE}
    with pytest.raises(OverBudgetError, match=r"step 0 \(quantize\).*mean_px \d"):
        run_recipe(tiny_pose_model(), [step], _data(tmp_path / "fail"))
    kept = {**step, "budget": {**IMPOSSIBLE, "on_over_budget": "keep"}}
    (result,) = run_recipe(tiny_pose_model(), [kept], _data(tmp_path / "keep"))
    check = result.report["budget"]
    assert check["within_budget"] is False and check["measured"]["mean_px"] > 1e-9
    assert check["held_out"]["n_crops"] == 3


def test_pareto_marks_and_recommends_within_the_target() -> None:
    parent = {"latency_ratio": 1.0, "size_ratio": 1.0, "oks_vs_parent": 1.0, "ap": None}
    rows = [
        {"name": "fast", "latency_ratio": 0.5, "size_ratio": 0.3, "oks_vs_parent": 0.80},
        {"name": "good", "latency_ratio": 0.7, "size_ratio": 0.5, "oks_vs_parent": 0.97},
        {"name": "worse", "latency_ratio": 0.8, "size_ratio": 0.6, "oks_vs_parent": 0.90},
        {"name": "slow", "latency_ratio": 1.4, "size_ratio": 0.5, "oks_vs_parent": 0.99},
    ]
    _mark(rows, parent, OptimizeTarget(min_oks_vs_parent=0.95))
    assert [r["pareto"] for r in rows] == [True, True, False, False]  # slow: the parent wins
    assert [r["meets_target"] for r in rows] == [False, True, False, False]
    assert [r.get("recommended", False) for r in rows] == [False, True, False, False]


def test_a_lossless_candidate_as_fast_as_the_parent_within_noise_wins_on_size() -> None:
    parent = {"latency_ratio": 1.0, "size_ratio": 1.0, "oks_vs_parent": 1.0, "ap": 0.30}
    rows = [
        {"name": "fp16", "latency_ratio": 1.01, "latency_noise": 0.004, "size_ratio": 0.51,
         "oks_vs_parent": 1.0, "ap": 0.30},
        {"name": "lossy", "latency_ratio": 0.70, "size_ratio": 0.30, "oks_vs_parent": 0.75,
         "ap": 0.20},
    ]  # fmt: skip
    _mark(rows, parent, OptimizeTarget(max_ap_loss=0.02))
    assert [r["pareto"] for r in rows] == [True, True]  # the parent no longer dominates fp16
    assert [r["meets_target"] for r in rows] == [True, False]
    assert rows[0].get("recommended") is True and "recommended" not in rows[1]
    slower = {"name": "fp16", "latency_ratio": 1.2, "size_ratio": 0.51, "oks_vs_parent": 1.0,
              "ap": 0.30}  # fmt: skip -- beyond the noise: the parent wins again
    _mark([slower], parent, OptimizeTarget(max_ap_loss=0.02))
    assert slower["pareto"] is False and "recommended" not in slower
