"""One JSON error shape for every error: ``{"error": {"code", "message", "detail"}}``.

Domain exceptions from model_store and pose_core map to HTTP status codes here, in one
place. Routes raise domain exceptions or :class:`ApiError`, never build error bodies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.route_index import allowed_methods
from model_store.errors import (
    ArtifactIntegrityError,
    ConflictError,
    DatasetRejected,
    InvalidArgumentError,
    NoDetectorError,
    NotFoundError,
    NotServableError,
    SchemaVersionError,
    StoreError,
)
from pose_core.importers.upload_info import UploadRejected
from pose_core.inference.assemble import ManifestError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


class PayloadTooLarge(StarletteHTTPException):
    """Raised while reading a body past the limit (an HTTPException, so FastAPI's form
    parsing re-raises it instead of turning it into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


# exception type -> (status, code); the first matching entry wins (subclasses first)
DOMAIN_ERRORS: list[tuple[type[Exception], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (InvalidArgumentError, 422, "invalid_argument"),
    (NoDetectorError, 503, "no_detector"),
    (NotServableError, 422, "not_servable"),
    (ManifestError, 422, "not_servable"),
    (DatasetRejected, 422, "dataset_rejected"),
    (UploadRejected, 422, "upload_rejected"),
    (ArtifactIntegrityError, 500, "artifact_integrity"),
    (SchemaVersionError, 500, "schema_version"),
    (StoreError, 500, "store_error"),
]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "detail": jsonable_encoder(detail)}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.detail)


def error_fields(exc: Exception) -> tuple[int, str, str, Any] | None:
    """(status, code, message, detail) of an :class:`ApiError` or a mapped domain error;
    None for any other exception."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message, exc.detail
    for kind, status, code in DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return status, code, str(exc), None
    return None


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    fields = error_fields(exc)
    if fields is None:
        raise exc
    if fields[0] >= 500:
        logger.error("%s: %s", fields[1], exc)
    return error_response(*fields)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    detail = None if isinstance(exc.detail, str) else exc.detail
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's own names only the first route matching the path
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return error_response(exc.status_code, code, message, detail, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k != "ctx"} for e in exc.errors()]
    return error_response(422, "validation_error", "request validation failed", errors)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    # Starlette re-raises the error after this response, and the server then drops the
    # connection: say so, so keep-alive clients do not see a reset.
    return error_response(
        500, "internal_error", "internal server error", headers={"Connection": "close"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    for kind in {kind for kind, _, _ in DOMAIN_ERRORS}:
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
