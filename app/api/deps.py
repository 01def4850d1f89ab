"""Annotated dependencies shared by routes."""

from __future__ import annotations

import secrets
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from app.errors import ApiError
from app.settings import Settings
from model_store import Store

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


def require_api_key_for_writes(request: Request, settings: SettingsDep) -> None:
    """When ``POSECOMPRESS_API_KEY`` is set, non-GET requests need ``X-API-Key``.

    Add to a router with ``dependencies=[WriteGuard]``."""
    if settings.api_key is None or request.method in SAFE_METHODS:
        return
    given = request.headers.get("x-api-key", "")
    if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")


WriteGuard = Depends(require_api_key_for_writes)
