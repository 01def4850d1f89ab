"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from common.params import CompressOptions, ExportOptions, OptimizeOptions, TfliteExportOptions
from model_store import DatasetInfo, JobInfo, ModelInfo, VersionInfo
from model_store.records import MAX_VERSION_NUMBER


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


#: Answers of any route that reads a body: 400 when it does not parse (malformed JSON or
#: multipart), 413 past ``MAX_UPLOAD_BYTES``.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
}


class ArtifactPublic(BaseModel):
    role: str
    filename: str
    sha256: str
    size: int


class VersionPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: int
    status: Literal["pending", "ready", "failed"]
    format: str
    parent: int | None
    recipe: dict[str, Any] | None
    manifest: dict[str, Any] | None
    report: dict[str, Any] | None
    error: str | None
    created_at: datetime
    created_by_job: str | None
    artifacts: list[ArtifactPublic]
    aliases: list[str]

    @classmethod
    def of(cls, info: VersionInfo) -> VersionPublic:
        return cls(
            model=info.model,
            version=info.number,
            status=info.status,  # type: ignore[arg-type]
            format=info.format,
            parent=info.parent,
            recipe=info.recipe,
            manifest=info.manifest,
            report=info.report,
            error=info.error,
            created_at=info.created_at,
            created_by_job=info.created_by_job,
            artifacts=[ArtifactPublic(**a.__dict__) for a in info.artifacts],
            aliases=list(info.aliases),
        )


class ModelPublic(BaseModel):
    name: str
    created_at: datetime
    latest: int | None
    version_count: int
    aliases: dict[str, int]
    default: int | None = Field(description="what /predict serves when no version is given")

    @classmethod
    def of(cls, info: ModelInfo) -> ModelPublic:
        return cls(**info.__dict__)


class ModelUploaded(BaseModel):
    name: str
    version: int
    format: str
    sha256: str
    size: int


class AliasUpdate(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION_NUMBER)


class ExportRequest(ExportOptions):
    """An ONNX Runtime-optimized graph (job ``export_onnx``)."""


class TfliteExportRequest(TfliteExportOptions):
    """A TFLite file of the version's torch form (job ``export_tflite``); ``tolerance``
    (largest absolute output difference to ONNX Runtime) null = report only."""

    format: Literal["tflite"]


def _export_format(body: Any) -> str:
    found = body.get("format", "onnx") if isinstance(body, dict) else getattr(body, "format", "")
    return str(found)


#: The body of ``POST .../export``: ``format`` (default ``onnx``) picks the request type.
ExportBody = Annotated[
    Annotated[ExportRequest, Tag("onnx")] | Annotated[TfliteExportRequest, Tag("tflite")],
    Discriminator(_export_format),
]


class JobPublic(BaseModel):
    id: str
    job_id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float
    message: str
    error: str | None
    params: dict[str, Any]
    result: dict[str, Any] | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, info: JobInfo) -> JobPublic:
        result = None
        if info.result_model is not None:
            result = {"model": info.result_model, "version": info.result_version}
        return cls(
            id=info.id,
            job_id=info.id,
            kind=info.kind,
            status=info.status,  # type: ignore[arg-type]
            progress=info.progress,
            message=info.message,
            error=info.error,
            params=info.params,
            result=result,
            attempts=info.attempts,
            worker=info.worker,
            created_at=info.created_at,
            started_at=info.started_at,
            finished_at=info.finished_at,
        )


class DatasetPublic(BaseModel):
    id: str
    name: str | None
    created_at: datetime
    image_count: int
    annotation_count: int
    labelled_image_count: int
    has_annotations: bool
    checksum: str
    size_bytes: int

    @classmethod
    def of(cls, info: DatasetInfo) -> DatasetPublic:
        return cls(**info.__dict__)


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadyPublic(BaseModel):
    status: Literal["ready", "degraded"]
    """``degraded``: the database and broker answer but the supervised worker is down."""
    checks: dict[str, str]


class CompressRequest(CompressOptions):
    """Body of ``POST /models/{name}/versions/{v}/compress``. Each recipe step is a method
    config ``{"method": "quantize" | "prune" | "lowrank" | "distill", ...fields}``, with an
    optional ``budget`` (``pose_core.compression.configs.Budget``)."""


class OptimizeRequest(OptimizeOptions):
    """Body of ``POST /models/{name}/versions/{v}/optimize``: one accuracy target."""


class EvaluateRequest(BaseModel):
    dataset: str = Field(description="labelled dataset id")
    mode: Literal["gt_boxes", "gt-boxes", "detector"] = "gt_boxes"


class CompareRow(BaseModel):
    version: int
    fields: dict[str, Any]
    ratios: dict[str, float]


class CompareTable(BaseModel):
    """One row per version: every report field flattened (``a.b.c``), and the ratio of each
    numeric field to the first listed version's."""

    model_config = ConfigDict(protected_namespaces=())

    model: str
    baseline: int
    columns: list[str]
    rows: list[CompareRow]
    pareto: dict[str, Any] | None = Field(
        default=None, description="the candidate table of the optimize job given as ?job="
    )
