"""Annotated dependencies shared by routes (the API key is checked by ``app.auth``)."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from common.settings import Settings
from model_store import Store


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
