"""/models/{name}/versions (list, get, artifact download, delete, export job) and
/models/{name}/aliases (set or move with one PUT, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse, JSONResponse

from app.api.deps import CeleryDep, StoreDep
from app.errors import ApiError
from app.jobs import accepted, enqueue_job
from app.schemas import (
    BODY_ERRORS,
    AliasUpdate,
    ErrorResponse,
    ExportBody,
    ExportRequest,
    JobPublic,
    VersionPublic,
)
from common.jobs import EXPORT_ONNX, EXPORT_TFLITE
from common.params import ExportParams, JobParams, TfliteExportParams
from model_store import Store, VersionInfo
from model_store.artifacts import Blob
from model_store.records import version_number
from pose_core.roles import TORCH_ROLES

router = APIRouter(
    prefix="/models/{name}",
    tags=["versions"],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


def find_version(store: Store, name: str, ref: str) -> VersionInfo:
    """A number gives that version whatever its status; an alias gives a ready one."""
    number = version_number(ref)
    if number is not None:
        return store.models.get_version(name, number)
    return store.models.resolve(name, ref)


@router.get("/versions", response_model=list[VersionPublic])
def list_versions(name: str, store: StoreDep) -> list[VersionPublic]:
    return [VersionPublic.of(v) for v in store.models.list_versions(name)]


@router.get("/versions/{ref}", response_model=VersionPublic)
def get_version(name: str, ref: str, store: StoreDep) -> VersionPublic:
    return VersionPublic.of(find_version(store, name, ref))


@router.get(
    "/versions/{ref}/artifact",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(
    name: str, ref: str, store: StoreDep, role: Annotated[str, Query()] = "model"
) -> FileResponse:
    """The artifact bytes, re-hashed before sending (500 if the blob is corrupt)."""
    version = store.models.resolve(name, ref)
    info = version.artifact(role)
    path = store.blobs.verify(Blob(info.sha256, info.size))
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=info.filename,
        headers={"ETag": f'"{info.sha256}"', "X-Checksum-SHA256": info.sha256},
    )


@router.delete(
    "/versions/{number}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorResponse}},
)
def delete_version(
    name: str, number: int, store: StoreDep, force: Annotated[bool, Query()] = False
) -> Response:
    """409 when other versions derive from it or a user alias points at it, unless force."""
    store.models.delete_version(name, number, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/aliases", response_model=dict[str, int])
def list_aliases(name: str, store: StoreDep) -> dict[str, int]:
    return store.models.get_model(name).aliases


@router.put(
    "/aliases/{alias}",
    response_model=VersionPublic,
    responses={**BODY_ERRORS, 409: {"model": ErrorResponse}},
)
def set_alias(name: str, alias: str, body: AliasUpdate, store: StoreDep) -> VersionPublic:
    """Create or move ``alias`` to a ready version (``latest`` is automatic)."""
    return VersionPublic.of(store.models.set_alias(name, alias, body.version))


@router.delete(
    "/aliases/{alias}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorResponse}},
)
def delete_alias(name: str, alias: str, store: StoreDep) -> Response:
    """409 for ``latest``, which is maintained automatically."""
    store.models.delete_alias(name, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/versions/{ref}/export",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={**BODY_ERRORS, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def start_export(
    name: str, ref: str, store: StoreDep, celery: CeleryDep, body: ExportBody | None = None
) -> JSONResponse:
    """Start an export job; the result is a new version (parent = this one). Poll ``Location``.

    - ``format: onnx`` (default): an ONNX Runtime-optimized graph, checked for parity;
    - ``format: tflite``: a ``tflite`` artifact converted from the torch form (recipe +
      weights), checked against ONNX Runtime; 422 without a torch form or without the
      ``edge`` extra."""
    version = store.models.resolve(name, ref)
    request = body or ExportRequest()
    params: JobParams
    if isinstance(request, ExportRequest):
        kind = EXPORT_ONNX
        params = ExportParams(model=name, version=version.number, **request.model_dump())
    else:
        from pose_core import export_tflite

        kind = EXPORT_TFLITE
        params = TfliteExportParams(model=name, version=version.number, **request.model_dump())
        if not {a.role for a in version.artifacts} >= TORCH_ROLES:
            raise ApiError(
                422,
                "unsupported_export",
                f"{name} v{version.number} has no torch form (artifacts recipe + weights) "
                "to convert to TFLite",
            )
        if not export_tflite.tflite_export_available():
            raise ApiError(422, "extra_missing", export_tflite.EXTRA_HINT)
    return accepted(enqueue_job(store, celery, kind, params))
