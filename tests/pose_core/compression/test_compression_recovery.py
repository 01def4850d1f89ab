"""Recovery signals on the tiny BlazePose-shaped GraphModel: block-output feature losses,
held-out early stopping and the activation basis of low-rank factorization."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from compression_tiny import random_crops, tiny_pose_model
from torch import nn

from pose_core.compression.configs import LowRankConfig, PruneConfig, RecoveryConfig
from pose_core.compression.data import CropSet
from pose_core.compression.distill import train_distill
from pose_core.compression.distill_loss import TeacherCache, holdout_error_px
from pose_core.compression.features import block_outputs, feature_loss, feature_taps
from pose_core.compression.lowrank import decompose, output_moments
from pose_core.compression.lowrank_layers import svd_layers
from pose_core.compression.measure import count_macs_params
from pose_core.compression.prune import prune_channels


def _perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy of ``model`` whose every weight got relative Gaussian noise."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return out


def _block_error(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    names = block_outputs(teacher)
    with torch.no_grad():
        with feature_taps(teacher, names) as t_feats:
            teacher(x)
        with feature_taps(student, names) as s_feats:
            student(x)
        return float(feature_loss(s_feats, t_feats))


def test_feature_taps_record_block_outputs_and_keep_an_existing_hook() -> None:
    model = tiny_pose_model()
    names = block_outputs(model)
    assert names == ("b1", "b2")  # the two residual adds
    seen: list[str] = []
    model.tensor_hook = lambda node, t: (seen.append(node.output), t)[1]
    x = random_crops(2).tensor([0, 1])
    with feature_taps(model, names) as feats:
        model(x)
    assert set(feats) == {"b1", "b2"} and feats["b2"].shape == (2, 16, 16, 16)
    assert "landmarks" in seen  # the inner hook still ran on every node
    assert model.tensor_hook is not None and model.tensor_hook.__name__ == "<lambda>"
    assert feature_loss(feats, {k: v.clone() for k, v in feats.items()}) == 0


def test_feature_loss_is_blind_to_channel_scale() -> None:
    teacher = {"a": torch.randn(4, 3, 5, 5)}
    student = {"a": teacher["a"] + 0.1 * torch.randn(4, 3, 5, 5)}
    scaled_t = {"a": teacher["a"] * torch.tensor([1.0, 5.0, 0.2]).reshape(1, 3, 1, 1)}
    scaled_s = {"a": student["a"] * torch.tensor([1.0, 5.0, 0.2]).reshape(1, 3, 1, 1)}
    torch.testing.assert_close(feature_loss(student, teacher), feature_loss(scaled_s, scaled_t))


@pytest.mark.slow
def test_feature_recovery_matches_the_teachers_blocks_on_held_out_crops() -> None:
    teacher = tiny_pose_model(seed=0)
    start = _perturbed(teacher, 0.3, seed=1)
    held_out = random_crops(8, seed=99).tensor(range(8))
    cfg = RecoveryConfig(
        steps=30, batch_size=4, lr=2e-3, warmup_steps=0, guard_crops=0, feature_weight=1.0
    )
    student = copy.deepcopy(start)
    stats = train_distill(student, teacher, random_crops(16, seed=3), cfg)
    landmark_only = copy.deepcopy(start)
    train_distill(landmark_only, teacher, random_crops(16, seed=3), cfg.model_copy(
        update={"feature_weight": 0.0}
    ))

    before = _block_error(start, teacher, held_out)
    assert stats.steps_done == 30
    assert _block_error(student, teacher, held_out) < 0.5 * before
    assert _block_error(student, teacher, held_out) < _block_error(landmark_only, teacher, held_out)


@pytest.mark.slow
def test_recovery_keeps_the_weights_that_scored_best_on_held_out_crops() -> None:
    teacher = tiny_pose_model(seed=0)
    student = _perturbed(teacher, 0.3, seed=1)
    crops = random_crops(16, seed=3)
    # a high lr without warm-up: the held-out error rises and falls between evaluations
    cfg = RecoveryConfig(steps=24, batch_size=4, lr=2e-2, warmup_steps=0, guard_crops=4,
                         eval_every=4)
    stats = train_distill(student, teacher, crops, cfg)

    cache = TeacherCache(teacher, crops)
    final = holdout_error_px(student, cache, np.arange(12, 16))
    assert stats.holdout_px_best is not None and stats.holdout_px_start is not None
    assert stats.holdout_px_best <= stats.holdout_px_start
    assert final == pytest.approx(stats.holdout_px_best, rel=1e-5)
    assert stats.best_step is not None and stats.best_step % 4 == 0


def test_training_stops_once_held_out_crops_stop_improving() -> None:
    teacher = tiny_pose_model(seed=0)
    crops = random_crops(16, seed=3)
    # the student starts as the teacher: no step can beat its held-out error of 0
    cfg = RecoveryConfig(steps=200, batch_size=4, lr=1e-2, warmup_steps=0, guard_crops=4,
                         eval_every=5, patience=2)  # fmt: skip
    stats = train_distill(copy.deepcopy(teacher), teacher, crops, cfg)
    assert stats.steps_done == 10
    assert stats.stopped_by == "no_improvement+restored"
    assert stats.holdout_px_best == stats.holdout_px_start == pytest.approx(0.0, abs=1e-4)

    unbounded = train_distill(copy.deepcopy(teacher), teacher, crops,
                              cfg.model_copy(update={"steps": 30, "patience": 0}))  # fmt: skip
    assert unbounded.steps_done == 30 and unbounded.stopped_by == "steps+restored"


class _StepScorer:
    """Scores by a fixed schedule, ignoring the student (and keeps what it was shown): the
    guard must keep the weights it scored best."""

    metric = "scheduled"

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.calls: list[np.ndarray] = []
        self.states: list[dict[str, torch.Tensor]] = []

    def __call__(self, student: nn.Module, idx: np.ndarray) -> float:
        self.calls.append(idx)
        self.states.append(copy.deepcopy(student.state_dict()))
        return self.scores[len(self.calls) - 1]


def test_a_custom_scorer_decides_which_weights_are_kept() -> None:
    teacher = tiny_pose_model(seed=0)
    student = _perturbed(teacher, 0.3, seed=1)
    crops = random_crops(16, seed=3)
    cfg = RecoveryConfig(steps=12, batch_size=4, lr=1e-2, warmup_steps=0, guard_crops=4,
                         eval_every=4, patience=0)  # fmt: skip
    scorer = _StepScorer([5.0, 3.0, 4.0, 6.0])  # steps 0, 4, 8, 12: step 4 is the best
    stats = train_distill(student, teacher, crops, cfg, scorer=scorer)
    assert len(scorer.calls) == 4
    assert all(np.array_equal(c, np.arange(12, 16)) for c in scorer.calls)
    assert stats.best_step == 4 and stats.holdout_px_best == 3.0
    assert stats.holdout_metric == "scheduled"
    kept = scorer.states[1]
    assert not all(torch.equal(kept[k], v) for k, v in scorer.states[3].items())
    assert all(torch.equal(kept[k], v) for k, v in student.state_dict().items())


def test_held_out_crops_are_never_trained_on() -> None:
    teacher = tiny_pose_model(seed=0)
    crops = random_crops(8, seed=3)
    poisoned = CropSet(np.concatenate([crops.images[:6], np.full_like(crops.images[6:], np.nan)]))
    cfg = RecoveryConfig(steps=3, batch_size=6, lr=1e-3, guard_crops=2, online_augment=False)
    student = tiny_pose_model(seed=1)
    stats = train_distill(student, teacher, poisoned, cfg)  # the NaN crops are only scored
    assert stats.steps_done == 3 and np.isfinite(stats.last_loss)


def test_activation_basis_reproduces_a_layer_better_than_the_weights_svd() -> None:
    model = tiny_pose_model(seed=0)
    calib = random_crops(8, seed=1).tensor(range(8))
    held_out = random_crops(8, seed=2).tensor(range(8))
    layer = model.b2_pw  # 16 -> 16, 1x1
    with torch.no_grad():
        inputs: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
        model(held_out)
        handle.remove()
        reference = layer(inputs[0])
        moment = output_moments(model, ["b2_pw"], calib)["b2_pw"]
        basis = torch.linalg.eigh(moment).eigenvectors.flip(-1).float()  # strongest first
        errors = {
            name: float((svd_layers(layer, 6, b)(inputs[0]) - reference).pow(2).mean())
            for name, b in (("weights", None), ("activations", basis))
        }
    assert errors["activations"] < 0.9 * errors["weights"]


def test_lowrank_with_the_activation_basis_fits_its_params_target() -> None:
    model = tiny_pose_model(seed=0)
    x = random_crops(4, seed=1).tensor(range(4))
    _, params0 = count_macs_params(model, x[:1])
    cfg = LowRankConfig(params_ratio=0.6, basis="activations")
    with torch.no_grad():
        plan = decompose(model, cfg, params0, x)
    assert plan["layers"] and count_macs_params(model, x[:1])[1] <= 0.6 * params0


def test_sensitivity_allocation_prunes_to_the_target_but_not_uniformly() -> None:
    crops = random_crops(8)
    kept = {}
    for allocation in ("uniform", "sensitivity"):
        model = tiny_pose_model()
        cfg = PruneConfig(
            ratio=None, target_macs_ratio=0.8, scope="all", allocation=allocation, round_to=None
        )
        info = prune_channels(model, cfg, crops)
        assert info["macs_after"] <= 0.81 * info["macs_before"]
        kept[allocation] = {name: len(idx) for name, idx in info["kept_channels"].items()}
    assert kept["sensitivity"] != kept["uniform"]
