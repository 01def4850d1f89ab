"""/datasets: upload a zip (``images/`` + optional COCO ``annotations.json``), list,
get, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from app.api.deps import SettingsDep, StoreDep
from app.multipart import saved_upload
from app.schemas import BODY_ERRORS, DatasetPublic, ErrorResponse

router = APIRouter(
    prefix="/datasets",
    tags=["datasets"],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={**BODY_ERRORS, 422: {"model": ErrorResponse}},
)
async def upload_dataset(
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="zip: images/ + optional annotations.json")],
    name: Annotated[str | None, Form()] = None,
) -> DatasetPublic:
    async with saved_upload(file, store.scratch_dir, settings.max_upload_bytes) as path:
        info = await run_in_threadpool(store.datasets.create_from_zip, path, name)
    return DatasetPublic.of(info)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(store: StoreDep) -> list[DatasetPublic]:
    return [DatasetPublic.of(d) for d in store.datasets.list_datasets()]


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, store: StoreDep) -> DatasetPublic:
    return DatasetPublic.of(store.datasets.get(dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: str, store: StoreDep) -> Response:
    store.datasets.delete(dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
