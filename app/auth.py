"""The API key (``POSECOMPRESS_API_KEY``), checked before a request's body is read.

When a key is set, every write (POST, PUT, DELETE, PATCH) needs header ``X-API-Key``; the
predict routes (tag ``predict``) too unless ``PREDICT_REQUIRES_KEY=false``. The check is an
ASGI middleware, not a route dependency, because FastAPI reads and parses the body before it
runs dependencies: a 200 MB upload or a malformed body without a key answers 401 at once.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_response
from app.route_index import route_tags
from common.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PREDICT_TAG = "predict"
KEY_HEADER = b"x-api-key"


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.settings.api_key
        if scope["type"] != "http" or key is None or not self._needs_key(scope):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(KEY_HEADER, b"")
        if secrets.compare_digest(given, key.encode()):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "unauthorized", "missing or wrong X-API-Key header")
        await response(scope, receive, send)

    def _needs_key(self, scope: Scope) -> bool:
        if scope["method"] in SAFE_METHODS:
            return False
        if self.settings.predict_requires_key:
            return True
        return PREDICT_TAG not in route_tags(scope["app"], scope["method"], scope["path"])
