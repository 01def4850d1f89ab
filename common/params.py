"""Typed parameters of each job kind: the API validates a request with them and stores
``model_dump(mode="json")`` in the job row; the worker reads the row back with the same model.
Defaults live here only, so a row stored before a field existed still loads (the field takes
its default) and the worker never repeats the API's defaults.

``*Options`` are what a request body carries; ``*Params`` add the version the job runs on.
Unknown keys in a stored row are ignored (a row written by a newer API)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ExportOptimization = Literal["disable", "basic", "extended"]
TflitePrecision = Literal["fp32", "fp16", "int8_dynamic"]
EvaluationModeName = Literal["gt-boxes", "detector"]
#: training datasets one compress or optimize job may combine
MAX_CROP_DATASETS = 8


class JobParams(BaseModel):
    """The version a job runs on (``version``: a number, or an alias such as ``latest``)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    version: int | str


class ExportOptions(BaseModel):
    """An ONNX Runtime-optimized graph (job ``export_onnx``)."""

    format: Literal["onnx"] = "onnx"
    optimization: ExportOptimization = "basic"
    verify_samples: int = Field(default=16, ge=1, le=100_000)
    tolerance: float = Field(default=1e-4, gt=0, allow_inf_nan=False)


class ExportParams(ExportOptions, JobParams):
    version: int | str = "latest"


class TfliteExportOptions(BaseModel):
    """A TFLite file of the version's torch form (job ``export_tflite``); ``tolerance``
    (largest absolute output difference to ONNX Runtime) null = report only."""

    format: Literal["tflite"] = "tflite"
    precision: TflitePrecision = "fp32"
    verify_samples: int = Field(default=8, ge=1, le=1000)
    tolerance: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class TfliteExportParams(TfliteExportOptions, JobParams):
    pass


class CropOptions(BaseModel):
    """Datasets and crop options shared by the compress and optimize requests."""

    dataset: str | list[str] = Field(
        description="training / calibration dataset id, or a list of ids whose photos are "
        f"used together (at most {MAX_CROP_DATASETS})"
    )
    eval_dataset: str | None = Field(default=None, description="labelled dataset id for AP/PCK")
    augment_copies: int = Field(default=1, ge=0, le=32, description="augmented copies per crop")
    max_crops: int | None = Field(default=None, ge=1, description="person crops to use")
    latency_rounds: int = Field(default=100, ge=1, le=1000)
    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="images held out of every step for the budget checks"
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("dataset")
    @classmethod
    def _dataset_ids(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_CROP_DATASETS:
            raise ValueError(f"give 1 to {MAX_CROP_DATASETS} dataset ids")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("a dataset id is given twice")
        return value

    @property
    def dataset_ids(self) -> list[str]:
        """The training datasets, in the order given."""
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)


class CropParams(CropOptions, JobParams):
    """What the compress and optimize jobs read to build their crops."""


class CompressOptions(CropOptions):
    """Body of ``POST /models/{name}/versions/{v}/compress``. Each recipe step is a method
    config ``{"method": "quantize" | "prune" | "lowrank" | "distill", ...fields}``, with an
    optional ``budget`` (``pose_core.compression.configs.Budget``)."""

    recipe: list[dict[str, Any]] = Field(min_length=1, max_length=16)
    keep_intermediate: bool = Field(default=False, description="a version for every step")
    promote: bool = Field(
        default=False, description="move alias 'default' to the result if it is within budget"
    )


class CompressParams(CompressOptions, CropParams):
    """Job ``compress``; ``recipe`` holds the typed configs as JSON (checked by the API)."""


class OptimizeOptions(CropOptions):
    """Body of ``POST /models/{name}/versions/{v}/optimize``: one accuracy target."""

    objective: Literal["latency", "size"] = "latency"
    max_ap_loss: float | None = Field(
        default=None, gt=0, lt=1, description="AP on eval_dataset (labelled) vs the parent"
    )
    min_oks_vs_parent: float | None = Field(
        default=None, gt=0, le=1, description="mean OKS vs the parent on held-out crops"
    )
    time_budget_s: float = Field(default=1800, ge=10, le=24 * 3600)

    @model_validator(mode="after")
    def _one_target(self) -> OptimizeOptions:
        if (self.max_ap_loss is None) == (self.min_oks_vs_parent is None):
            raise ValueError("set exactly one of max_ap_loss and min_oks_vs_parent")
        if self.max_ap_loss is not None and self.eval_dataset is None:
            raise ValueError("max_ap_loss needs eval_dataset (a labelled dataset)")
        return self


class OptimizeParams(OptimizeOptions, CropParams):
    """Job ``optimize``."""


class EvaluateParams(JobParams):
    """Job ``evaluate``: a labelled dataset and the evaluation mode (normalised spelling)."""

    dataset: str
    mode: EvaluationModeName = "gt-boxes"
