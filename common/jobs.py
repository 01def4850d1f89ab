"""Job kinds, the Celery queue and task names: the API sends a job by name, the worker's
task of the same name runs it (neither side imports the other for that)."""

from __future__ import annotations

from typing import Final, Literal

EXPORT_ONNX: Final = "export_onnx"
EXPORT_TFLITE: Final = "export_tflite"
COMPRESS: Final = "compress"
EVALUATE: Final = "evaluate"
OPTIMIZE: Final = "optimize"

JobKind = Literal["export_onnx", "export_tflite", "compress", "evaluate", "optimize"]
JOB_KINDS: Final[tuple[str, ...]] = (EXPORT_ONNX, EXPORT_TFLITE, COMPRESS, EVALUATE, OPTIMIZE)

QUEUE: Final = "posecompress"
"""The one Celery queue every job goes to."""


def task_name(kind: str) -> str:
    """Celery task name of a job kind (e.g. ``posecompress.export_onnx``)."""
    return f"posecompress.{kind}"
