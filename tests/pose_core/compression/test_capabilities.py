"""Which methods run on an ONNX graph: one fact, on the config classes."""

from __future__ import annotations

import pytest

from pose_core.compression.base import CompressionError, OnnxModel
from pose_core.compression.configs import (
    BUILTIN_CONFIGS,
    DistillConfig,
    LowRankConfig,
    PruneConfig,
    QuantizeConfig,
)
from pose_core.compression.registry import compress, onnx_methods, torch_needed_at


def test_only_quantize_runs_on_onnx() -> None:
    assert onnx_methods() == ["quantize"]
    assert [m for m, c in sorted(BUILTIN_CONFIGS.items()) if c.runs_on_onnx] == ["quantize"]


def test_the_first_step_that_needs_torch_and_why() -> None:
    quantize, prune = QuantizeConfig(), PruneConfig(ratio=0.3)
    assert torch_needed_at([prune, quantize], torch_form=True) is None
    assert torch_needed_at([quantize, prune], torch_form=True) == (1, 0)
    assert torch_needed_at([quantize], torch_form=False) is None
    assert torch_needed_at([quantize, quantize, prune], torch_form=False) == (2, 0)
    assert torch_needed_at([DistillConfig()], torch_form=False) == (0, 0)


@pytest.mark.parametrize("config", [PruneConfig(ratio=0.3), LowRankConfig(energy=0.9)])
def test_torch_methods_refuse_an_onnx_graph(config: PruneConfig | LowRankConfig) -> None:
    with pytest.raises(CompressionError, match="needs a torch model"):
        compress(OnnxModel(b""), config, None)
