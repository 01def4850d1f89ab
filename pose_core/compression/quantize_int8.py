"""Static INT8 with an accuracy budget: calibrate, quantize, measure, fall back to fp32 per node."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from pose_core.compression import quantize_graph as qg
from pose_core.compression import quantize_mixed as qm
from pose_core.compression.base import CompressionError
from pose_core.compression.quantize_calibration import calibrate_ranges

if TYPE_CHECKING:
    from pose_core.compression.configs import QuantizeConfig

logger = logging.getLogger(__name__)


def quantize_int8(
    model: Any,
    fp32: onnx.ModelProto,
    calib: np.ndarray,
    holdout: np.ndarray,
    config: QuantizeConfig,
    data: Any,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """INT8 QDQ graph of ``fp32`` within ``config``'s budget, and the report of how it was made.

    ``model`` is the step's input (used only for quantization-aware fine-tuning, which needs
    its torch GraphModel); ``fp32`` is its optimized ONNX graph.
    """
    from pose_core.inference.int8_weights import u8s8_saturates

    progress = getattr(data, "progress", None)
    report: dict[str, Any] = {
        # fidelity and latency below were measured with the dense weights run as u8 (exact on
        # this CPU, whose u8 x s8 kernels saturate; slower than s8 on a CPU with VNNI)
        "measured_with_u8_dense_weights": u8s8_saturates(),
        "calibrator": config.calibrator,
        "percentile": config.percentile if config.calibrator == "percentile" else None,
        "per_channel": config.per_channel,
        "n_calib": len(calib),
        "n_holdout": len(holdout),
    }
    reference = qm.run_first_output(fp32.SerializeToString(), holdout)

    def evaluate(candidate: onnx.ModelProto) -> float:
        out = qm.run_first_output(candidate.SerializeToString(), holdout)
        return qm.landmark_error_px(reference, out)

    source = fp32
    if config.equalize_activations:
        from pose_core.compression.quantize_equalize import equalize_activations

        source, report["equalized_pairs"] = equalize_activations(source, calib)
        report["equalized_fp32_error_px"] = round(evaluate(source), 4)
    _report_progress(progress, 0.3, "calibrating")
    ranges = calibrate_ranges(
        source,
        calib,
        method=config.calibrator,
        percentile=config.percentile,
        num_bins=config.num_bins,
    )
    qdq = _quantize(source, ranges, config)
    error = evaluate(qdq)
    report["ptq_error_px"] = round(error, 4)
    logger.info("full INT8: %.3f px mean landmark error", error)
    if config.qat_steps > 0:
        _report_progress(progress, 0.4, "quantization-aware fine-tuning")
        trained, report["qat"] = _qat(model, source, qdq, ranges, calib, config, data)
        if trained is not None:
            trained_qdq = _quantize(trained, ranges, config)
            qat_error = evaluate(trained_qdq)
            # kept only if the held-out crops say it helped, like every recovery
            report["qat"].update(error_px=round(qat_error, 4), kept=qat_error < error)
            if qat_error < error:
                source, qdq, error = trained, trained_qdq, qat_error
                report["qat_fp32_error_px"] = round(evaluate(source), 4)
    report["int8_error_px"] = round(error, 4)

    budget = config.budget.max_mean_px
    fp32_nodes: list[str] = []
    if budget is not None and error > budget and config.max_fp32_nodes > 0:
        _report_progress(progress, 0.7, "per-node sensitivity")
        candidates = qg.weighted_nodes(source) + [
            n.name for n in source.graph.node if n.op_type in qg.RESIDUAL_OPS
        ]
        ranking = qm.rank_sensitivity(qdq, source, candidates, evaluate, error)
        report["sensitivity_top"] = [
            {"node": s.node, "error_px": round(s.error_px, 4), "gain_px": round(s.gain_px, 4)}
            for s in ranking[: config.sensitivity_top_k]
        ]
        fp32_nodes, curve = qm.greedy_fp32_fallback(
            qdq, source, ranking, evaluate, budget, config.max_fp32_nodes
        )
        report["tradeoff_curve"] = [
            {"n_fp32": c.n_fp32, "error_px": round(c.error_px, 4)} for c in curve
        ]
        max_ratio = config.budget.max_latency_ratio
        if fp32_nodes and max_ratio is not None:
            max_ratio += config.budget.latency_tolerance
            _report_progress(progress, 0.9, "fp32 fallback within the latency budget")
            fp32_nodes, report["fallback_latency"] = _within_latency(
                qdq, source, fp32_nodes, max_ratio, holdout[:1]
            )
        if fp32_nodes:
            qdq = qm.keep_fp32(qdq, source, fp32_nodes)
            error = evaluate(qdq)
    _verify_fp32_nodes(qdq, fp32_nodes)
    report["excluded_nodes"] = fp32_nodes
    report["fidelity_px"] = round(error, 4)
    report["error_within_budget"] = budget is None or error <= budget
    _report_progress(progress, 1.0, "quantized")
    return qdq, report


#: interleaved rounds of each latency probe of the fp32 fallback
FALLBACK_LATENCY_ROUNDS = 30


def _within_latency(
    qdq: onnx.ModelProto,
    fp32: onnx.ModelProto,
    nodes: list[str],
    max_ratio: float,
    example: np.ndarray,
) -> tuple[list[str], list[dict[str, float]]]:
    """The longest prefix of ``nodes`` (most harmful first) whose graph is at most
    ``max_ratio`` times as slow as ``fp32`` (bisection: fp32 nodes only add latency)."""
    from pose_core.compression.measure import ort_session, session_latency
    from pose_core.evaluation.latency import median_ratio

    probes: list[dict[str, float]] = []
    reference = ort_session(fp32.SerializeToString())

    def ratio(n: int) -> float:
        graph = qm.keep_fp32(qdq, fp32, nodes[:n]) if n else qdq
        session = ort_session(graph.SerializeToString())
        cand, ref = session_latency([session, reference], example, FALLBACK_LATENCY_ROUNDS)
        probes.append({"n_fp32": n, "latency_ratio": round(median_ratio(cand, ref), 4)})
        return probes[-1]["latency_ratio"]

    if ratio(len(nodes)) <= max_ratio:
        return nodes, probes
    lo, hi = 0, len(nodes)  # hi: over the budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ratio(mid) <= max_ratio:
            lo = mid
        else:
            hi = mid
    logger.info("fp32 fallback cut to %d of %d nodes by the latency budget", lo, len(nodes))
    return nodes[:lo], probes


def _verify_fp32_nodes(qdq: onnx.ModelProto, fp32_nodes: list[str]) -> None:
    """Every node reported as fp32 reads a float weight; every other weighted node is INT8."""
    floats = qg.float_weighted_nodes(qdq)
    weighted = set(qg.weighted_nodes(qdq)) | {
        n.name for n in qdq.graph.node if n.op_type in qg.WEIGHTED_OPS
    }
    wrong = [n for n in fp32_nodes if n in weighted and n not in floats]
    unexpected = sorted(floats - set(fp32_nodes))
    if wrong or unexpected:
        raise CompressionError(
            f"quantized graph does not match the plan: not fp32 {wrong}, "
            f"unexpectedly fp32 {unexpected}"
        )


def _quantize(
    source: onnx.ModelProto, ranges: dict[str, tuple[float, float]], config: QuantizeConfig
) -> onnx.ModelProto:
    qdq = qg.quantize_qdq(source, ranges, per_channel=config.per_channel)
    return qg.strip_qdq(qdq, qg.output_tensors(source))


def _qat(
    model: Any,
    source: onnx.ModelProto,
    qdq: onnx.ModelProto,
    ranges: dict[str, tuple[float, float]],
    calib: np.ndarray,
    config: QuantizeConfig,
    data: Any,
) -> tuple[onnx.ModelProto | None, dict[str, Any]]:
    """The fp32 graph of ``model`` fine-tuned under ``qdq``'s quantization (same tensor names
    as ``source``, for the same ``ranges``) and its report; ``None`` (and why, in the report)
    when the step's input has no torch graph form that matches the graph."""
    from pose_core.compression.quantize_qat import QatUnavailable, qat_finetune
    from pose_core.models.graph import GraphModel

    try:
        if not isinstance(model, GraphModel):
            raise QatUnavailable("the step's input has no torch graph form")
        quantize = functools.partial(_quantize, ranges=ranges, config=config)
        trained, report = qat_finetune(model, source, qdq, quantize, calib, config, data)
        names = {o for n in trained.graph.node for o in n.output}
        missing = sorted(set(ranges) - names - {i.name for i in trained.graph.input})
        if missing:
            raise QatUnavailable(
                f"the fine-tuned graph lost {len(missing)} calibrated tensors "
                f"(first {missing[0]!r})"
            )
    except QatUnavailable as exc:
        logger.warning("quantization-aware fine-tuning skipped: %s", exc)
        return None, {"skipped": str(exc)}
    return trained, report


def _report_progress(progress: Any, fraction: float, message: str) -> None:
    if callable(progress):
        progress(fraction, message)
