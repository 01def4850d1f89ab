"""Pose-native metrics: COCO OKS AP, PCK, pixel errors, fidelity to a parent, latency.

Entry point for the CLI and the ``evaluate`` job: :func:`evaluate_dataset`.
"""

from pose_core.evaluation.protocol import EvaluationMode, EvaluationReport, evaluate_dataset

__all__ = ["EvaluationMode", "EvaluationReport", "evaluate_dataset"]
