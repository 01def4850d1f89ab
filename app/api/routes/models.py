"""/models: upload (multipart ``file``, ``name``, optional ``manifest`` JSON), list, get,
delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from app.api.deps import SettingsDep, StoreDep
from app.multipart import parse_json_field, saved_upload
from app.schemas import BODY_ERRORS, ErrorResponse, ModelPublic, ModelUploaded
from model_store import Store, VersionInfo
from model_store.registry_reads import check_name
from pose_core.importers.formats import inspect_upload
from pose_core.roles import ROLE_MODEL

router = APIRouter(
    prefix="/models",
    tags=["models"],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


def store_uploaded_model(
    store: Store, name: str, path: Path, manifest: dict[str, Any] | None
) -> VersionInfo:
    """Inspect the upload (forward pass), check it serves the model's task when the name
    serves keypoints, and only then store it as a new version. ``path`` is named by the
    cleaned upload file name, which the recipe records."""
    from app.serving.upload_check import (
        check_serves_model_task,
        stored_files,
        stored_manifest,
        with_architecture,
    )

    manifest = with_architecture(store, manifest)
    info = inspect_upload(path, path.name, manifest)
    files = stored_files(info, path)
    kept_manifest = stored_manifest(info, manifest)
    check_serves_model_task(store, name, files, kept_manifest)
    pending = store.models.create_pending_version(
        name,
        format=info.format,
        recipe={"source": "upload", "filename": path.name},
        manifest=kept_manifest,
    )
    try:
        return store.models.finalize_version(
            name, pending.number, files, report={"inspection": info.as_report()}
        )
    except Exception as exc:
        store.models.mark_failed(name, pending.number, f"storing the upload failed: {exc}")
        raise


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelUploaded,
    responses={**BODY_ERRORS, 422: {"model": ErrorResponse}},
)
async def upload_model(
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="model file (.onnx, ...)")],
    name: Annotated[str, Form(description="model name")],
    manifest: Annotated[str | None, Form(description="JSON object")] = None,
) -> ModelUploaded:
    check_name(name)
    manifest_dict = parse_json_field(manifest, "manifest")
    async with saved_upload(file, store.scratch_dir, settings.max_upload_bytes) as path:
        version = await run_in_threadpool(store_uploaded_model, store, name, path, manifest_dict)
    artifact = version.artifact(ROLE_MODEL)
    return ModelUploaded(
        name=name,
        version=version.number,
        format=version.format,
        sha256=artifact.sha256,
        size=artifact.size,
    )


@router.get("", response_model=list[ModelPublic])
def list_models(store: StoreDep) -> list[ModelPublic]:
    return [ModelPublic.of(m) for m in store.models.list_models()]


@router.get("/{name}", response_model=ModelPublic)
def get_model(name: str, store: StoreDep) -> ModelPublic:
    return ModelPublic.of(store.models.get_model(name))


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, responses={409: {"model": ErrorResponse}}
)
def delete_model(name: str, store: StoreDep, force: Annotated[bool, Query()] = False) -> Response:
    store.models.delete_model(name, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
