"""create_app(): settings, store, Celery producer, routers, error handlers, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.routes import compression, datasets, health, jobs, models, predict, ui, versions
from app.auth import ApiKeyMiddleware
from app.embedded.worker_status import worker_status
from app.errors import install_error_handlers
from app.metrics import Metrics, MetricsMiddleware
from app.multipart import MULTIPART_SLACK, BodySizeLimitMiddleware
from common.settings import Settings, get_settings

ROUTERS = [
    health.router,
    models.router,
    versions.router,
    compression.router,
    jobs.router,
    datasets.router,
    predict.router,
    ui.router,
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from model_store import open_store
        from model_store.datasets import DatasetLimits
        from workers.celery_app import create_celery

        limits = DatasetLimits(
            max_members=settings.max_dataset_members,
            max_uncompressed_bytes=settings.max_dataset_uncompressed_bytes,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_annotations_bytes=settings.max_annotations_bytes,
        )
        app.state.store = open_store(
            settings.effective_database_url, settings.resolved_data_dir, limits=limits
        )
        app.state.celery = create_celery(settings)
        try:
            yield
        finally:
            app.state.store.close()

    app = FastAPI(
        title="posecompress",
        version="0.1.0",
        description="Compress human-pose models, measure the cost, serve 2D keypoints.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(worker_status=lambda: worker_status(settings))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(ApiKeyMiddleware, settings=settings)  # before the size limit and the body
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
