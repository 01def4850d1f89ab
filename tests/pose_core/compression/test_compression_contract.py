"""One contract over every registered compression method, on a tiny BlazePose-shaped GraphModel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from compression_tiny import random_crops, tiny_pose_model

from pose_core.compression.base import CompressionResult, UnknownMethodError
from pose_core.compression.data import CompressionData
from pose_core.compression.measure import REPORT_KEYS, measure_candidate
from pose_core.compression.registry import compress, known_methods, parse_config

#: Small settings per method so that each runs in seconds; other methods run with their defaults.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "prune": {"ratio": 0.3, "recovery": {"steps": 2, "batch_size": 2}},
    "lowrank": {"params_ratio": 0.7, "recovery": {"steps": 2, "batch_size": 2}},
    "distill": {"steps": 2, "batch_size": 2},
    "quantize": {
        "num_calibration_crops": 8,
        "num_holdout_crops": 4,
        "max_fp32_nodes": 2,
        "sensitivity_top_k": 2,
    },
}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", known_methods())
def test_every_method_honours_the_contract(method: str, tmp_path: Path) -> None:
    model = tiny_pose_model()
    before, recipe_before = _state(model), model.recipe()
    crops = random_crops(12)
    config = parse_config({"method": method, **TINY_SETTINGS.get(method, {})})

    assert parse_config(json.loads(config.model_dump_json())) == config
    result = compress(model, config, CompressionData(train=crops, work_dir=tmp_path))

    assert isinstance(result, CompressionResult)
    assert result.model is not model
    assert model.recipe() == recipe_before
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.report["method"] == method
    json.dumps(result.report)
    measured = measure_candidate(result.model, model, crops, latency_rounds=2)
    assert set(REPORT_KEYS) <= set(measured)
    assert measured["fidelity"]["n_crops"] == len(crops)
    json.dumps(measured)


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(UnknownMethodError) as info:
        parse_config({"method": "sparsify"})
    for name in known_methods():
        assert name in str(info.value)


def test_recipes_parse_without_importing_torch() -> None:
    """The API validates recipes before queueing: that must not load torch into its process."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pose_core.compression.registry import known_methods, parse_config\n"
        "steps = [{'method': m} for m in ('quantize', 'distill', 'lowrank')]\n"
        "steps.append({'method': 'prune', 'ratio': 0.3, 'recovery': {'steps': 5}})\n"
        "configs = [parse_config(s) for s in steps]\n"
        "assert configs[3].recovery.steps == 5\n"
        "assert known_methods() == ['distill', 'lowrank', 'prune', 'quantize']\n"
        "print(sorted(m for m in ('torch', 'numpy', 'onnx') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
