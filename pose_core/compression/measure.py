"""Measurements of a compressed candidate against its parent (the report of every new version).

``measure_candidate(candidate, parent, crops, ...)`` returns a JSON-able dict:

* ``artifact_bytes`` / ``parent_artifact_bytes``: size of the ONNX export (fp32 torch models are
  exported, ONNX-only models are measured as they are); ``weights_bytes`` for torch models
  (safetensors-equivalent: sum of tensor bytes);
* ``params`` / ``macs`` (and the parent's) -- counted on the torch graph; an ONNX-only candidate
  reports the MACs / params of ``source_torch`` (the fp32 graph it came from) when given;
* ``latency_ms`` p50 / p95 of candidate and parent, batch 1, ONNX Runtime, measured in this
  process in shuffled interleaved rounds (:func:`pose_core.evaluation.latency.measure_latency`),
  and their ``latency_ratio``: the median over rounds of the per-round ratio
  (:func:`pose_core.evaluation.latency.median_ratio`);
* ``fidelity``: mean COCO-17 keypoint pixel error and mean OKS of the candidate against the
  parent's predictions on ``crops`` (both run through ONNX Runtime;
  :func:`pose_core.evaluation.fidelity.fidelity_metrics`), with how many crops and whether
  they were held out from training and calibration (``fidelity_held_out``);
* ``accuracy`` / ``parent_accuracy``: COCO AP (with its bootstrap interval ``ap_ci``) and PCK
  in ground-truth-box mode when
  ``eval_dataset_dir`` has labels (``None`` otherwise), by :func:`gt_box_accuracy` unless
  ``accuracy_fn(onnx_bytes, dataset_dir)`` is given;
* ``wall_time_s`` when the caller passes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pose_core.compression.base import OnnxModel
from pose_core.compression.data import CropSet
from pose_core.compression.pose_format import BLAZEPOSE_FORMAT, PoseFormat, keypoint_fidelity

if TYPE_CHECKING:
    import onnxruntime
    import torch

    from pose_core.evaluation.latency import LatencyStats

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = (
    "artifact_bytes",
    "params",
    "macs",
    "latency_ms",
    "latency_ratio",
    "fidelity",
    "accuracy",
)


def example_input(crops: CropSet) -> torch.Tensor:
    """A batch-1 tensor shaped like the crops (the model's input)."""
    return crops.tensor([0])


def count_macs_params(model: torch.nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on ``example`` (torch-pruning's counter)."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def onnx_bytes_of(model: torch.nn.Module | OnnxModel, example: torch.Tensor) -> bytes:
    """The ONNX graph of ``model`` (exported with :func:`pose_core.export.export_onnx` if torch)."""
    if isinstance(model, OnnxModel):
        return model.onnx_bytes
    import tempfile

    from pose_core.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="posecompress-measure-") as tmp:
        path = export_onnx(model.eval(), Path(tmp) / "model.onnx", tuple(example.shape))
        return path.read_bytes()


def gt_box_accuracy(
    onnx_bytes: bytes, dataset_dir: Path, pose: PoseFormat = BLAZEPOSE_FORMAT
) -> dict[str, Any]:
    """COCO AP / PCK of a pose graph (decoded as ``pose`` says: by default a BlazePose-style
    landmark graph), ground-truth-box mode (ORT, 2 threads)."""
    from pose_core.evaluation.protocol import EvaluationMode, evaluate_dataset
    from pose_core.inference.assemble import pose_pipeline
    from pose_core.inference.runtime import OnnxRunner

    manifest = pose.manifest or {"kind": pose.kind}
    pipeline = pose_pipeline(manifest, OnnxRunner(onnx_bytes, threads=2), detector=None)
    report = evaluate_dataset(pipeline, dataset_dir, EvaluationMode.GT_BOXES)
    return {
        "ap": report.ap,
        "ap_ci": report.ap_ci.model_dump(),
        "ap50": report.ap50,
        "pck": report.pck,
        "mean_error_px": report.mean_error_px,
        "n_people": report.n_people,
        "mode": report.mode.value,
    }


def ort_session(onnx_bytes: bytes, threads: int = 2) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session configured as the serving runner configures it."""
    from pose_core.inference.runtime import OnnxRunner

    return OnnxRunner(onnx_bytes, threads).session


def run_session(
    session: onnxruntime.InferenceSession, images: np.ndarray, batch: int = 8
) -> list[np.ndarray]:
    """Every output of ``session`` over ``images`` (N, 3, H, W), concatenated on the batch axis."""
    name = session.get_inputs()[0].name
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch):
        chunks.append(session.run(None, {name: images[start : start + batch]}))
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def session_latency(
    sessions: Sequence[onnxruntime.InferenceSession],
    example: np.ndarray,
    rounds: int = 100,
    warmup: int = 3,
) -> list[LatencyStats]:
    """Batch-1 latency of each session, by :func:`~pose_core.evaluation.latency.measure_latency`
    (every round runs every session once, in a shuffled order)."""
    from pose_core.evaluation.latency import measure_latency

    def runner(session: onnxruntime.InferenceSession) -> Callable[[], object]:
        feed = {session.get_inputs()[0].name: example}
        return lambda: session.run(None, feed)

    stats = measure_latency(
        {str(k): runner(s) for k, s in enumerate(sessions)}, rounds=rounds, warmup=warmup
    )
    return [stats[str(k)] for k in range(len(sessions))]


def latency_summary(stats: LatencyStats) -> dict[str, float]:
    """The report's ``latency_ms`` entry: p50 / p95 in ms and the number of samples."""
    return {"p50": stats.p50, "p95": stats.p95, "n": stats.n}


def landmark_fidelity(
    candidate: np.ndarray, parent: np.ndarray, crop_size: float, *, held_out: bool
) -> dict[str, float | int | bool | None]:
    """Fidelity of candidate vs parent BlazePose landmarks on the same crops, by
    :func:`keypoint_fidelity` on the 17 COCO keypoints.

    Args:
        candidate, parent: (N, 195) landmark outputs in crop pixels.
        crop_size: crop side in pixels (the OKS object scale is the crop area / 1.5**2).
        held_out: whether no step trained or calibrated on these crops (stated in the report).
    """
    return keypoint_fidelity(
        BLAZEPOSE_FORMAT.keypoints([candidate]),
        BLAZEPOSE_FORMAT.keypoints([parent]),
        crop_size / 1.5,
        held_out=held_out,
    )


def torch_weights_bytes(model: torch.nn.Module) -> int:
    return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))


def measure_candidate(
    candidate: torch.nn.Module | OnnxModel,
    parent: torch.nn.Module | OnnxModel,
    crops: CropSet,
    *,
    eval_dataset_dir: Path | None = None,
    source_torch: torch.nn.Module | None = None,
    accuracy_fn: Callable[[bytes, Path], dict[str, Any]] | None = None,
    wall_time_s: float | None = None,
    latency_rounds: int = 100,
    max_fidelity_crops: int = 64,
    candidate_onnx: bytes | None = None,
    parent_onnx: bytes | None = None,
    fidelity_held_out: bool = False,
    pose: PoseFormat = BLAZEPOSE_FORMAT,
) -> dict[str, Any]:
    """The report of ``candidate`` against ``parent`` (see the module docstring); ``pose``
    says how the outputs become keypoints.

    ``candidate_onnx`` / ``parent_onnx``: graphs already exported (for example the stored
    artifacts), measured instead of exporting the torch forms again. ``fidelity_held_out``:
    no step trained or calibrated on ``crops`` (the report says so, or that they did).
    """
    import torch

    from pose_core.evaluation.latency import median_ratio

    example = example_input(crops)
    cand_onnx = candidate_onnx or onnx_bytes_of(candidate, example)
    parent_onnx = parent_onnx or onnx_bytes_of(parent, example)
    report: dict[str, Any] = {
        "artifact_bytes": len(cand_onnx),
        "parent_artifact_bytes": len(parent_onnx),
    }
    counted = candidate if isinstance(candidate, torch.nn.Module) else source_torch
    report["macs"], report["params"] = (
        count_macs_params(counted, example) if counted is not None else (None, None)
    )
    if isinstance(parent, torch.nn.Module):
        report["parent_macs"], report["parent_params"] = count_macs_params(parent, example)
    if isinstance(candidate, torch.nn.Module):
        report["weights_bytes"] = torch_weights_bytes(candidate)
    cand_sess, parent_sess = ort_session(cand_onnx), ort_session(parent_onnx)
    lat_c, lat_p = session_latency([cand_sess, parent_sess], example.numpy(), latency_rounds)
    report["latency_ms"], report["parent_latency_ms"] = (
        latency_summary(lat_c),
        latency_summary(lat_p),
    )
    report["latency_ratio"] = median_ratio(lat_c, lat_p)
    images = crops.images[:max_fidelity_crops]
    report["fidelity"] = pose.fidelity(
        run_session(cand_sess, images),
        run_session(parent_sess, images),
        (images.shape[-2], images.shape[-1]),
        held_out=fidelity_held_out,
    )
    report["accuracy"] = report["parent_accuracy"] = None
    if eval_dataset_dir is not None and (Path(eval_dataset_dir) / "annotations.json").exists():
        evaluate = accuracy_fn or gt_box_accuracy
        report["accuracy"] = evaluate(cand_onnx, Path(eval_dataset_dir))
        report["parent_accuracy"] = evaluate(parent_onnx, Path(eval_dataset_dir))
    if wall_time_s is not None:
        report["wall_time_s"] = wall_time_s
    missing = [k for k in _REQUIRED_KEYS if k not in report]
    assert not missing, missing
    return report


REPORT_KEYS = _REQUIRED_KEYS
