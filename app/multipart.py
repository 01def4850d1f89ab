"""Upload handling: a request body limit and copying an upload to disk with a cap."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ApiError, PayloadTooLarge, error_response

MULTIPART_SLACK = 1024 * 1024  # form fields and boundaries around the file


class BodySizeLimitMiddleware:
    """Rejects request bodies over ``limit`` bytes with 413: at once from
    ``Content-Length``, or while streaming for chunked bodies."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = error_response(
                413, "payload_too_large", f"request body exceeds the limit of {self.limit} bytes"
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def safe_filename(name: str | None, default: str = "upload.bin") -> str:
    """The base name of a client-supplied file name, reduced to safe characters."""
    base = Path((name or "").replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    return cleaned[:128] or default


@asynccontextmanager
async def saved_upload(upload: UploadFile, directory: Path, limit: int) -> AsyncIterator[Path]:
    """The upload copied to ``<temp dir>/<safe original name>`` (413 past ``limit``);
    the copy is removed when the block ends."""
    folder = Path(tempfile.mkdtemp(dir=directory, prefix="upload-"))
    try:
        yield await _copy(upload, folder / safe_filename(upload.filename), limit)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _copy(upload: UploadFile, path: Path, limit: int) -> Path:
    written = 0
    with path.open("xb") as out:
        while chunk := await upload.read(1024 * 1024):
            written += len(chunk)
            if written > limit:
                raise ApiError(413, "payload_too_large", f"file exceeds the limit of {limit} bytes")
            out.write(chunk)
    if written == 0:
        raise ApiError(422, "empty_upload", "the uploaded file is empty")
    return path


def parse_json_field(raw: str | None, field: str) -> dict[str, Any] | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        message = f"form field {field!r} is not valid JSON: {exc}"
        raise ApiError(422, "invalid_json", message) from exc
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_json", f"form field {field!r} must be a JSON object")
    return value
