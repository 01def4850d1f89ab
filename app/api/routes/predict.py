"""``POST /predict``, ``POST /predict/batch`` and the per-version alias
``POST /models/{name}/versions/{ref}/predict``: keypoints of the people in photos.

Decoding and inference run in the threadpool, never on the event loop.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.api.deps import SettingsDep, StoreDep
from app.errors import ApiError, error_fields
from app.schemas import BODY_ERRORS, ErrorBody, ErrorResponse
from app.serving.predictor import Prediction, Predictor
from app.serving.schemas import BatchItem, BatchPredictionPublic, ImageSize, PredictionPublic
from common.settings import Settings
from model_store import Store
from model_store.errors import NotServableError
from model_store.lineage import ServedVersion
from model_store.records import DEFAULT
from pose_core.builtin import BUILTIN_MODEL_NAME
from pose_core.inference.assemble import ManifestError

router = APIRouter(
    tags=["predict"],
    responses={
        **BODY_ERRORS,
        401: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)

MAX_BATCH_IMAGES = 32
_predictor_lock = threading.Lock()

ModelField = Annotated[str, Form(description="model name")]
VersionField = Annotated[
    str, Form(description="version number or alias; default: the model's 'default' alias")
]
MaxPeopleField = Annotated[int, Form(ge=0, le=100, description="detections examined, at most")]
MinScoreField = Annotated[float, Form(ge=0.0, le=1.0, description="minimum person score")]
FormatField = Annotated[Literal["json", "png"] | None, Form(description="png: draw skeletons")]
DetectorMode = Literal["tiled", "single"]
DetectorField = Annotated[
    DetectorMode,
    Form(
        description="tiled (default): the full image plus overlapping tiles, finds people in "
        "group photos; single: one full-image pass, faster, may miss people"
    ),
]
FormatQuery = Annotated[Literal["json", "png"] | None, Query(alias="format")]


def get_predictor(request: Request) -> Predictor:
    """The app's predictor, built on first use (one session cache per process)."""
    state = request.app.state
    with _predictor_lock:
        predictor: Predictor | None = getattr(state, "predictor", None)
        if predictor is None or predictor.store is not state.store:
            settings: Settings = state.settings
            predictor = Predictor(
                state.store,
                threads=settings.ort_threads,
                cache_size=settings.session_cache_size,
                slots=settings.inference_slots,
            )
            state.predictor = predictor
    return predictor


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "image_too_large", f"the image exceeds the limit of {limit} bytes")
    return data


def _predict_one(
    predictor: Predictor,
    served: ServedVersion,
    data: bytes,
    settings: Settings,
    max_people: int,
    min_score: float,
    detector: DetectorMode,
) -> Prediction:
    return predictor.predict_bytes(
        served,
        data,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        max_people=max_people,
        min_score=min_score,
        tiled=detector == "tiled",
    )


def _server_timing(timings: dict[str, float]) -> str:
    order = ["queue", "decode", "detect", "landmarks", "draw", "total"]
    return ", ".join(f"{k};dur={timings[k] * 1e3:.1f}" for k in order if k in timings)


def _png(prediction: Prediction) -> bytes:
    from pose_core.inference.drawing import draw_people

    assert prediction.image is not None
    drawn = draw_people(prediction.image.image, prediction.people)
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    return buffer.getvalue()


def _serve(
    predictor: Predictor,
    model: str,
    version: str,
    data: bytes,
    settings: Settings,
    max_people: int,
    min_score: float,
    detector: DetectorMode,
    output: str | None,
) -> Response:
    """Resolve, predict and render in one worker-thread hop (each hop costs a context switch
    on a small machine)."""
    served = predictor.served_version(model, version)
    prediction = _predict_one(predictor, served, data, settings, max_people, min_score, detector)
    if output == "png":
        start = time.perf_counter()
        body = _png(prediction)
        prediction.timings["draw"] = time.perf_counter() - start
        prediction.timings["total"] += prediction.timings["draw"]
        media_type = "image/png"
    else:
        body = PredictionPublic.of(prediction).model_dump_json().encode()
        media_type = "application/json"
    return Response(
        body, media_type=media_type, headers={"Server-Timing": _server_timing(prediction.timings)}
    )


async def _predict_response(
    request: Request,
    store: Store,
    settings: Settings,
    image: UploadFile,
    model: str,
    version: str,
    max_people: int,
    min_score: float,
    detector: DetectorMode,
    output: str | None,
) -> Response:
    del store  # the predictor holds it
    predictor = get_predictor(request)
    data = await _read_limited(image, settings.max_image_bytes)
    return await run_in_threadpool(
        _serve, predictor, model, version, data, settings, max_people, min_score, detector, output
    )


_PREDICT_DOC = {
    "response_model": PredictionPublic,
    "responses": {
        200: {"content": {"image/png": {}}, "description": "JSON, or PNG with format=png"}
    },
}


@router.post("/predict", **_PREDICT_DOC)  # type: ignore[arg-type]
async def predict(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    model: ModelField = BUILTIN_MODEL_NAME,
    version: VersionField = DEFAULT,
    max_people: MaxPeopleField = 10,
    min_score: MinScoreField = 0.5,
    detector: DetectorField = "tiled",
    format: FormatField = None,
    format_query: FormatQuery = None,
) -> Response:
    """People in one photo: box, score and 17 COCO keypoints in image pixels (or, with
    ``format=png``, the photo with skeletons drawn), by the model's ``default`` version
    unless ``version`` names another. ``Server-Timing`` gives the stages."""
    return await _predict_response(
        request,
        store,
        settings,
        image,
        model,
        version,
        max_people,
        min_score,
        detector,
        format or format_query,
    )


@router.post("/models/{name}/versions/{ref}/predict", **_PREDICT_DOC)  # type: ignore[arg-type]
async def predict_version(
    name: str,
    ref: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    max_people: MaxPeopleField = 10,
    min_score: MinScoreField = 0.5,
    detector: DetectorField = "tiled",
    format: FormatField = None,
    format_query: FormatQuery = None,
) -> Response:
    """``POST /predict`` for the version ``ref`` (number or alias) of model ``name``."""
    return await _predict_response(
        request,
        store,
        settings,
        image,
        name,
        ref,
        max_people,
        min_score,
        detector,
        format or format_query,
    )


@router.post("/predict/batch", response_model=BatchPredictionPublic)
async def predict_batch(
    request: Request,
    settings: SettingsDep,
    images: Annotated[list[UploadFile], File(description="several photos")],
    model: ModelField = BUILTIN_MODEL_NAME,
    version: VersionField = DEFAULT,
    max_people: MaxPeopleField = 10,
    min_score: MinScoreField = 0.5,
    detector: DetectorField = "tiled",
) -> Response:
    """Several photos of one version; each result is people or that image's error."""
    if len(images) > MAX_BATCH_IMAGES:
        raise ApiError(422, "too_many_images", f"at most {MAX_BATCH_IMAGES} images per batch")
    predictor = get_predictor(request)
    served = await run_in_threadpool(predictor.served_version, model, version)
    results: list[BatchItem] = []
    totals: dict[str, float] = {}
    for index, upload in enumerate(images):
        try:
            data = await _read_limited(upload, settings.max_image_bytes)
            prediction = await run_in_threadpool(
                _predict_one,
                predictor,
                served,
                data,
                settings,
                max_people,
                min_score,
                detector,
            )
        except (ApiError, NotServableError, ManifestError) as exc:
            fields = error_fields(exc)
            assert fields is not None  # every type caught here is mapped
            _status, code, message, detail = fields
            error = ErrorBody(code=code, message=message, detail=detail)
            results.append(BatchItem(index=index, filename=upload.filename, error=error))
            continue
        public = PredictionPublic.of(prediction)
        results.append(
            BatchItem(
                index=index,
                filename=upload.filename,
                image=ImageSize(width=prediction.width, height=prediction.height),
                people=public.people,
            )
        )
        for key, value in prediction.timings.items():
            totals[key] = totals.get(key, 0.0) + value
    body = BatchPredictionPublic(model=model, version=served.version.number, results=results)
    return Response(
        body.model_dump_json(exclude_none=True),
        media_type="application/json",
        headers={"Server-Timing": _server_timing(totals)},
    )
