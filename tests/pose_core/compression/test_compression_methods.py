"""Focused behaviour of the torch compression methods on the tiny BlazePose-shaped GraphModel."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from compression_tiny import random_crops, tiny_pose_model
from torch import nn

from pose_core.compression.base import CompressionError
from pose_core.compression.configs import LowRankConfig, PruneConfig, RecoveryConfig
from pose_core.compression.data import CompressionData
from pose_core.compression.distill import train_distill
from pose_core.compression.distill_loss import distill_loss, pose_outputs
from pose_core.compression.lowrank import decompose
from pose_core.compression.measure import count_macs_params, example_input
from pose_core.compression.pipeline import run_recipe
from pose_core.compression.prune import prune_channels
from pose_core.models.graph import load_graph_model, save_graph_model
from pose_core.models.layers import ChannelPad


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(model(x))


def test_pruning_removes_channels_and_the_recipe_round_trips(tmp_path: Path) -> None:
    model = tiny_pose_model()
    crops = random_crops(4)
    report = prune_channels(model, PruneConfig(ratio=0.5, scope="all"), crops)

    assert report["params_after"] < report["params_before"]
    assert report["macs_after"] < report["macs_before"]
    assert model.get_submodule("b1_pw").out_channels < 16
    assert model.get_submodule("head").out_channels == 195  # heads are kept
    pad = model.get_submodule("b1_pad")
    assert isinstance(pad, ChannelPad) and pad.before + pad.after < 8
    x = crops.tensor([0, 1])
    outputs = _outputs(model, x)
    assert [o.shape for o in outputs] == [(2, 195), (2, 1)]

    save_graph_model(model, tmp_path / "pruned")
    reloaded = load_graph_model(tmp_path / "pruned")
    for a, b in zip(outputs, _outputs(reloaded, x), strict=True):
        assert torch.equal(a, b)


def test_pruning_to_a_macs_target() -> None:
    model = tiny_pose_model()
    crops = random_crops(4)
    report = prune_channels(
        model, PruneConfig(ratio=None, target_macs_ratio=0.8, scope="all"), crops
    )
    assert report["macs_after"] <= 0.8 * report["macs_before"]


def test_block_internal_pruning_keeps_the_residual_stream() -> None:
    """Only channels private to one block go: in the tiny model, ``down``'s outputs (read by
    the heads alone); the channels the residual adds and the channel pad tie together stay."""
    model = tiny_pose_model()
    prune_channels(model, PruneConfig(ratio=0.5), random_crops(4))
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths["down"] < 24
    assert widths["stem"] == 8 and widths["b1_pw"] == 16
    assert widths["b2_conv"] == 16 and widths["b2_pw"] == 16
    with pytest.raises(CompressionError, match="scope"):  # too little is block-internal here
        prune_channels(
            tiny_pose_model(), PruneConfig(ratio=None, target_macs_ratio=0.5), random_crops(4)
        )


def test_lowrank_reduces_params_and_is_exact_on_low_rank_weights() -> None:
    model = tiny_pose_model()
    with torch.no_grad():  # give two layers an exact low rank
        conv = model.get_submodule("b2_conv")
        conv.weight.copy_(
            torch.einsum("or,rikl->oikl", torch.randn(16, 2), torch.randn(2, 16, 3, 3))
        )
        pw = model.get_submodule("b2_pw")
        pw.weight.copy_((torch.randn(16, 3) @ torch.randn(3, 16))[:, :, None, None])
    x = random_crops(2).tensor([0, 1])
    reference = _outputs(model, x)
    _, params0 = count_macs_params(model, x[:1])

    cfg = LowRankConfig(energy=0.99999, params_ratio=None, round_to=1, basis="weights")
    plan = decompose(model, cfg, params0)

    assert {"b2_conv", "b2_pw"} <= set(plan["layers"])
    assert isinstance(model.get_submodule("b2_conv"), nn.Sequential)
    assert count_macs_params(model, x[:1])[1] < params0
    for a, b in zip(reference, _outputs(model, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-2)


def test_lowrank_meets_a_global_parameter_budget() -> None:
    model = tiny_pose_model()
    x = random_crops(1).tensor([0])
    _, params0 = count_macs_params(model, x)
    decompose(model, LowRankConfig(params_ratio=0.6, basis="weights"), params0)
    assert count_macs_params(model, x)[1] <= 0.6 * params0


@pytest.mark.slow
def test_distillation_reduces_the_loss_against_the_teacher() -> None:
    teacher = tiny_pose_model(seed=0)
    student = tiny_pose_model(seed=1)
    crops = random_crops(8)
    cfg = RecoveryConfig(steps=40, batch_size=4, lr=3e-3)
    x = crops.tensor(range(8))

    def loss() -> float:
        with torch.no_grad():
            return float(distill_loss(pose_outputs(student(x)), pose_outputs(teacher(x)), cfg))

    def landmark_error_px() -> float:
        with torch.no_grad():
            return float((student(x)[0] - teacher(x)[0]).abs().mean())

    loss_before, error_before = loss(), landmark_error_px()
    stats = train_distill(student, teacher, crops, cfg)
    assert stats.steps_done == 40 and stats.stopped_by == "steps"
    assert loss() < loss_before
    assert landmark_error_px() < 0.5 * error_before


def test_a_stopped_distillation_resumes_where_it_stopped(tmp_path: Path) -> None:
    teacher = tiny_pose_model(seed=0)
    start = tiny_pose_model(seed=1)
    crops = random_crops(8)
    cfg = RecoveryConfig(steps=6, batch_size=4, lr=1e-3, checkpoint_every=2)

    uninterrupted = copy.deepcopy(start)
    train_distill(uninterrupted, teacher, crops, cfg)

    first = copy.deepcopy(start)
    calls = {"n": 0}

    def stop_after_four_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    stats = train_distill(
        first, teacher, crops, cfg, should_stop=stop_after_four_steps, checkpoint_dir=tmp_path
    )
    assert stats.stopped_by == "cancelled" and stats.steps_done == 4
    assert (tmp_path / "distill.pt").exists()

    resumed = copy.deepcopy(start)  # a fresh process would start again from the parent
    stats = train_distill(resumed, teacher, crops, cfg, checkpoint_dir=tmp_path)
    assert stats.resumed_from_step == 4 and stats.steps_done == 6
    assert not (tmp_path / "distill.pt").exists()
    for key, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_recipe_chain_keeps_lineage_and_never_mutates_its_input(tmp_path: Path) -> None:
    model = tiny_pose_model()
    before = json.dumps(model.recipe())
    steps = [
        {"method": "prune", "ratio": 0.3, "recovery": {"steps": 1, "batch_size": 2}},
        {"method": "distill", "steps": 1, "batch_size": 2},
    ]
    seen: list[float] = []
    data = CompressionData(
        train=random_crops(4), work_dir=tmp_path, progress=lambda f, m: seen.append(f)
    )

    results = run_recipe(model, steps, data, keep_intermediate=True)

    assert [r.report["lineage"]["step"] for r in results] == [0, 1]
    assert results[1].report["lineage"]["recipe"][0]["method"] == "prune"
    assert json.dumps(model.recipe()) == before
    assert seen == sorted(seen) and seen[-1] == 1.0
    only_last = run_recipe(model, steps, data, keep_intermediate=False)
    assert len(only_last) == 1 and len(only_last[0].report["steps"]) == 2


@pytest.mark.slow
def test_a_rerun_recipe_loads_finished_steps_instead_of_running_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed chain (step 1 never finished) re-run with its work dir redoes only step 1."""
    from pose_core.compression import pipeline

    model = tiny_pose_model()
    steps = [
        {"method": "prune", "ratio": 0.3, "recovery": {"steps": 1, "batch_size": 2}},
        {"method": "quantize", "num_calibration_crops": 4, "num_holdout_crops": 2},
    ]
    data = CompressionData(train=random_crops(8), work_dir=tmp_path)
    ran: list[str] = []
    real_compress = pipeline.compress

    def killed_at_quantize(model: Any, config: Any, data: Any) -> Any:
        ran.append(config.method)
        if config.method == "quantize":
            raise KeyboardInterrupt  # the worker dies here
        return real_compress(model, config, data)

    monkeypatch.setattr(pipeline, "compress", killed_at_quantize)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(model, steps, data)
    assert ran == ["prune", "quantize"]
    assert not list(tmp_path.glob("step1_quantize/result*"))

    def counted(model: Any, config: Any, data: Any) -> Any:
        ran.append(config.method)
        return real_compress(model, config, data)

    monkeypatch.setattr(pipeline, "compress", counted)
    ran.clear()
    pruned, quantized = run_recipe(model, steps, data)

    assert ran == ["quantize"]
    assert pruned.report["lineage"]["step"] == 0 and pruned.report["method"] == "prune"
    assert pruned.model.recipe() != model.recipe()  # the saved pruned shapes came back
    assert quantized.report["lineage"]["recipe"][0]["method"] == "prune"
    # a different step config does not reuse the saved result
    steps[0] = {**steps[0], "ratio": 0.5}
    ran.clear()
    run_recipe(model, steps, data)
    assert ran == ["prune", "quantize"]


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_both_importances_prune(importance: str) -> None:
    model = tiny_pose_model()
    crops = random_crops(4, labelled=importance == "taylor")
    report = prune_channels(
        model, PruneConfig(ratio=0.3, importance=importance, taylor_batches=1), crops
    )  # type: ignore[arg-type]
    assert report["params_after"] < report["params_before"]
    assert example_input(crops).shape == (1, 3, 256, 256)


def test_least_squares_refit_brings_a_pruned_model_back_towards_its_parent() -> None:
    from pose_core.compression.distill import frozen_copy
    from pose_core.compression.refit import refit_pointwise

    parent = tiny_pose_model()
    crops = random_crops(24)
    student = copy.deepcopy(parent)
    kept = prune_channels(student, PruneConfig(ratio=0.3), crops)["kept_channels"]
    x = random_crops(8, seed=1).tensor(range(8))  # held-out crops

    def error() -> float:
        return float((_outputs(student, x)[0] - _outputs(parent, x)[0]).abs().mean())

    before = error()
    summary = refit_pointwise(  # the tiny heads see one pixel per crop: refit them too here
        student,
        frozen_copy(parent),
        crops,
        {n: (n, torch.tensor(i)) for n, i in kept.items()},
        min_rows_per_weight=0.0,
    )
    assert summary["layers"] >= 4
    assert error() < 0.5 * before


def test_refit_leaves_under_determined_convs_alone() -> None:
    """A head that sees one pixel per crop would be interpolated through the refit crops."""
    from pose_core.compression.distill import frozen_copy
    from pose_core.compression.refit import refit_pointwise

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AvgPool2d(64), nn.Conv2d(4, 6, 4))
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    crops = random_crops(8)  # head: 8 rows for 4 * 4 * 4 + 1 = 65 weights per output
    targets = {"0": ("0", None), "2": ("2", None)}

    def refitted(min_rows_per_weight: float) -> tuple[nn.Module, dict[str, int]]:
        model = copy.deepcopy(student)
        summary = refit_pointwise(
            model, frozen_copy(teacher), crops, targets, min_rows_per_weight=min_rows_per_weight
        )
        return model, summary

    guarded, summary = refitted(0.5)
    assert summary == {"layers": 1, "improved": 1, "skipped": 1}
    assert torch.equal(guarded[2].weight, student[2].weight)
    assert not torch.equal(guarded[0].weight, student[0].weight)
    unguarded, summary = refitted(0.0)
    assert summary["layers"] == 2
    assert not torch.equal(unguarded[2].weight, student[2].weight)


def test_a_distillation_that_makes_things_worse_is_undone() -> None:
    teacher = tiny_pose_model(seed=0)
    student = tiny_pose_model(seed=1)  # lr 0.5 without warm-up wrecks it
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = RecoveryConfig(steps=2, batch_size=4, lr=0.5, warmup_steps=0, guard_crops=4)

    stats = train_distill(student, teacher, random_crops(4), cfg)

    assert stats.stopped_by == "steps+restored"
    for key, value in before.items():
        assert torch.equal(student.state_dict()[key], value)


def test_online_augmentation_is_seeded_and_keeps_crops_valid() -> None:
    from pose_core.compression.distill_loss import random_augment

    batch = random_crops(6).tensor(range(6))
    first = random_augment(batch, np.random.default_rng([0, 7]))
    again = random_augment(batch, np.random.default_rng([0, 7]))
    other = random_augment(batch, np.random.default_rng([0, 8]))
    assert first.shape == batch.shape and first.dtype == batch.dtype
    assert torch.equal(first, again)  # a resumed run sees the batches an uninterrupted one saw
    assert not torch.allclose(first, other)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    # every crop moves by its own transform
    deltas = (first - batch).abs().mean(dim=(1, 2, 3))
    assert float(deltas.min()) > 0.01 and len(set(deltas.tolist())) == 6
