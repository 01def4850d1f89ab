"""Compression of models that are not BlazePose (uploaded heatmap / SimCC ONNX, given a torch
form by onnx2torch): crops in the model's own input format, fidelity through the serving
decoders, output heads never pruned, low-rank and distillation on raw outputs.

The nets are small real architectures with random (seeded) weights (a ResNet-18-style
SimpleBaseline, an RTMPose-like SimCC net): these tests check shapes, what is kept and what
is measured, not accuracy."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from pose_nets_support import BASELINE_HW, BASELINE_MANIFEST, export_pose_net, simple_baseline
from simcc_support import INPUT_HW, SIMCC_MANIFEST, export_simcc_onnx, tiny_simcc

from pose_core.compression.base import CompressionError
from pose_core.compression.configs import DistillConfig, LowRankConfig, PruneConfig
from pose_core.compression.crops import build_cropset, load_crop_sources, load_rgb
from pose_core.compression.data import CompressionData, CropSet
from pose_core.compression.measure import count_macs_params
from pose_core.compression.pose_format import PoseFormat
from pose_core.compression.prune import prune_channels
from pose_core.compression.registry import compress
from pose_core.importers.onnx_torch import ONNX2TORCH_INSTALL, onnx2torch_available
from pose_core.inference.assemble import keypoint_model

TESTS = Path(__file__).resolve().parents[2]
HEATMAP = PoseFormat.of_manifest(BASELINE_MANIFEST)
SIMCC = PoseFormat.of_manifest(SIMCC_MANIFEST)
needs_onnx2torch = pytest.mark.skipif(
    not onnx2torch_available(), reason=f"onnx2torch is not installed: {ONNX2TORCH_INSTALL}"
)


def _normalised_crops(n: int, hw: tuple[int, int], seed: int = 0) -> CropSet:
    rng = np.random.default_rng(seed)
    return CropSet(rng.standard_normal((n, 3, *hw)).astype(np.float32))


def _data(tmp_path: Path, pose: PoseFormat, crops: CropSet) -> CompressionData:
    return CompressionData(train=crops, work_dir=tmp_path / "work", pose=pose)


def test_heatmap_and_simcc_outputs_become_coco17_crop_pixels() -> None:
    heatmaps = np.zeros((1, 17, 64, 48), np.float32)
    heatmaps[0, np.arange(17), 2 * np.arange(17) + 1, np.arange(17) + 3] = 1.0
    xy = HEATMAP.keypoints([heatmaps])
    assert xy.shape == (1, 17, 2)  # heatmap cell -> input pixels: x 4 (192 / 48), + 0.5
    np.testing.assert_allclose(xy[0, :, 0], (np.arange(17) + 3) * 4 + 0.5, atol=0.3)
    simcc_x, simcc_y = np.zeros((2, 17, 96)), np.zeros((2, 17, 128))
    simcc_x[:, :, 10], simcc_y[:, :, 40] = 1.0, 1.0
    np.testing.assert_allclose(
        SIMCC.keypoints([simcc_x, simcc_y]), np.full((2, 17, 2), [5.5, 20.5])
    )
    same = SIMCC.fidelity([simcc_x, simcc_y], [simcc_x, simcc_y], INPUT_HW, held_out=True)
    assert same["mean_landmark_px"] == 0 and same["mean_oks_vs_parent"] == pytest.approx(1.0)
    moved = simcc_x.copy()
    moved[:, :, 10], moved[:, :, 16] = 0.0, 1.0  # 3 input pixels to the right
    off = SIMCC.fidelity([moved, simcc_y], [simcc_x, simcc_y], INPUT_HW, held_out=True)
    assert off["mean_landmark_px"] == pytest.approx(3.0)
    assert HEATMAP.crop_format() is not None and PoseFormat().crop_format() is None


def test_crops_in_a_model_format_are_what_serving_feeds_the_model() -> None:
    dataset = TESTS / "data" / "dev_subset"
    crop_format = HEATMAP.crop_format()
    crops = build_cropset([dataset], crop_format=crop_format, max_sources=2)
    assert crops.images.shape == (2, 3, *BASELINE_HW)
    served = keypoint_model(BASELINE_MANIFEST, lambda batch: batch)
    for index, source in enumerate(load_crop_sources(dataset)[:2]):
        batch, _ = served.preprocess(load_rgb(source.image_path), [source.rect])  # type: ignore[attr-defined]
        np.testing.assert_allclose(crops.images[index], batch[0], atol=1e-4)


@needs_onnx2torch
def test_prune_keeps_the_heatmap_head_of_a_converted_simple_baseline(tmp_path: Path) -> None:
    from pose_core.importers.onnx_torch import onnx_to_torch

    onnx_bytes = export_pose_net(simple_baseline(), tmp_path / "b.onnx", BASELINE_HW, ["heatmaps"])
    model = onnx_to_torch(onnx_bytes)
    crops = _normalised_crops(2, BASELINE_HW)
    report = prune_channels(model, PruneConfig(ratio=0.3), crops)
    assert report["heads_kept"] == 1
    assert report["macs_after"] < 0.7 * report["macs_before"]
    with torch.no_grad():
        assert model(crops.tensor([0, 1])).shape == (2, 17, 64, 48)
    with pytest.raises(CompressionError, match="importance 'taylor'"):
        compress(
            model, PruneConfig(ratio=0.3, importance="taylor"), _data(tmp_path, HEATMAP, crops)
        )


@needs_onnx2torch
def test_prune_of_a_converted_simcc_net_keeps_its_keypoint_maps_and_classifiers(
    tmp_path: Path,
) -> None:
    from pose_core.importers.onnx_torch import onnx_to_torch

    model = onnx_to_torch(export_simcc_onnx(tiny_simcc(seed=1), tmp_path / "s.onnx"))
    report = prune_channels(
        model, PruneConfig(ratio=0.5, round_to=None), _normalised_crops(2, INPUT_HW)
    )
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [8, 8, 8, 17]  # 16 -> 8; the 17 maps kept
    assert [m.in_features for m in linears] == [192, 192]  # they read the maps' 16 x 12 cells
    assert report["heads_kept"] == 3 and report["macs_after"] < report["macs_before"]


@needs_onnx2torch
def test_lowrank_and_distill_run_on_a_converted_simcc_net(tmp_path: Path) -> None:
    from pose_core.importers.onnx_torch import onnx_to_torch

    model = onnx_to_torch(export_simcc_onnx(tiny_simcc(seed=1), tmp_path / "s.onnx"))
    crops = _normalised_crops(16, INPUT_HW, seed=2)
    example = crops.tensor([0])
    recovery = {"steps": 6, "batch_size": 4, "guard_crops": 4, "eval_every": 2}
    lowrank = compress(
        model,
        LowRankConfig(params_ratio=0.7, round_to=1, min_saving=0.0, recovery=recovery),
        _data(tmp_path / "lowrank", SIMCC, crops),
    )
    assert isinstance(lowrank.model, torch.nn.Module)
    assert count_macs_params(lowrank.model, example)[1] < count_macs_params(model, example)[1]
    assert lowrank.report["recovery"]["holdout_metric"] == "output_nmse"
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in lowrank.model(crops.tensor([0, 1]))]
    assert shapes == [(2, 17, 96), (2, 17, 128)]

    student = copy.deepcopy(model)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn_like(p))
    data = _data(tmp_path / "distill", SIMCC, crops)
    distilled = compress(student, DistillConfig(**recovery, lr=1e-3), replace_teacher(data, model))
    stats = distilled.report["distill"]
    assert stats["holdout_metric"] == "output_nmse" and stats["steps_done"] >= 1
    assert stats["holdout_px_best"] < stats["holdout_px_start"]  # the recovery helped


def replace_teacher(data: CompressionData, teacher: torch.nn.Module) -> CompressionData:
    from dataclasses import replace

    return replace(data, teacher=teacher)


@needs_onnx2torch
def test_a_prune_target_is_searched_on_the_decoded_keypoints(tmp_path: Path) -> None:
    from dataclasses import replace

    from pose_core.compression.data import HeldOut
    from pose_core.compression.pipeline import run_recipe
    from pose_core.importers.onnx_torch import onnx_to_torch

    model = onnx_to_torch(export_simcc_onnx(tiny_simcc(seed=1), tmp_path / "s.onnx"))
    held_out = HeldOut(_normalised_crops(4, INPUT_HW, seed=5), ("a.jpg", "b.jpg"))
    data = replace(
        _data(tmp_path, SIMCC, _normalised_crops(8, INPUT_HW)), held_out=held_out, latency_rounds=3
    )
    lenient = {"max_mean_px": 1000.0, "min_oks_vs_parent": None, "max_latency_ratio": None}
    step = PruneConfig(
        round_to=None,
        budget=lenient,
        recovery={"steps": 0},
        search={"lowest": 0.8, "highest": 0.95, "probes": 2},
    )
    (result,) = run_recipe(model, [step], data)
    search = result.report["target_search"]
    assert search["field"] == "target_macs_ratio" and len(search["probes"]) == 2
    assert all(p["mean_px"] is not None for p in search["probes"] if p.get("reachable", True))
    measured = result.report["budget"]["measured"]  # fidelity decoded from the SimCC bins
    assert measured["mean_px"] is not None and measured["mean_px"] >= 0


@needs_onnx2torch
def test_a_finished_step_on_a_converted_net_is_reused_by_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typing import Any

    from pose_core.compression import pipeline
    from pose_core.importers.onnx_torch import onnx_to_torch

    model = onnx_to_torch(export_simcc_onnx(tiny_simcc(seed=1), tmp_path / "s.onnx"))
    steps: list[Any] = [
        {"method": "prune", "ratio": 0.5, "round_to": None, "recovery": {"steps": 1}},
        {"method": "distill", "steps": 1, "batch_size": 2},
    ]
    data = _data(tmp_path, SIMCC, _normalised_crops(8, INPUT_HW))
    ran: list[str] = []
    real_compress = pipeline.compress
    dies_at: set[str] = {"distill"}

    def compress_or_die(model: Any, config: Any, data: Any) -> Any:
        ran.append(config.method)
        if config.method in dies_at:
            raise KeyboardInterrupt  # the worker dies here
        return real_compress(model, config, data)

    monkeypatch.setattr(pipeline, "compress", compress_or_die)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_recipe(model, steps, data)
    assert (tmp_path / "work" / "step0_prune" / "result" / "torch_form.onnx").is_file()

    ran.clear()
    dies_at.clear()
    pruned, distilled = pipeline.run_recipe(model, steps, data)
    assert ran == ["distill"]  # the pruned net came back from its ONNX form
    convs = [m.out_channels for m in pruned.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [8, 8, 8, 17]
    assert distilled.report["distill"]["holdout_metric"] == "output_nmse"
