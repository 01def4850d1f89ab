"""The web page: ``/ui`` (models, compare, compress, try it), its static files under
``/ui/static/``, the keypoint skeleton it draws (``/ui/skeleton.json``), and ``/`` redirecting
to ``/ui``. Everything is package data of :mod:`app.ui`; nothing is fetched from elsewhere."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from app.errors import ApiError
from pose_core.keypoints import COCO17_NAMES, COCO17_SKELETON

router = APIRouter(include_in_schema=False)

#: every file the page is made of -> its media type (nothing else is served)
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: the page changes with the installed package, so browsers revalidate it
NO_CACHE = {"Cache-Control": "no-cache"}


@cache
def static_bytes(name: str) -> bytes:
    return resources.files("app.ui").joinpath("static", name).read_bytes()


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
def page() -> Response:
    return Response(
        static_bytes("index.html"), media_type=STATIC_FILES["index.html"], headers=NO_CACHE
    )


@router.get("/ui/static/{name}")
def static_file(name: str) -> Response:
    if name not in STATIC_FILES:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return Response(static_bytes(name), media_type=STATIC_FILES[name], headers=NO_CACHE)


@router.get("/ui/skeleton.json")
def skeleton() -> dict[str, object]:
    """The COCO-17 keypoint names and limb pairs the page draws (one definition, in
    :mod:`pose_core.keypoints`)."""
    return {"keypoints": list(COCO17_NAMES), "limbs": [list(pair) for pair in COCO17_SKELETON]}
