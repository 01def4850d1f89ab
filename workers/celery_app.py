"""The Celery application, built from settings. Configuration only: task modules are
imported by the worker process (``include``), never by the API, which sends tasks by
name (:func:`common.jobs.task_name`). Importing this module builds no app: the worker's app
is :func:`worker_celery` (cached; ``celery -A workers.celery_app`` finds it as ``app``), the
API builds its producer with :func:`create_celery` from its own settings. Tasks are declared
with ``shared_task``, so they bind to whichever app the process made.

Reliability settings: late acks + reject on worker loss (a job whose process dies is
re-delivered), prefetch 1 (a worker holds at most one job it is not running), a hard
time limit per job, JSON only, and a visibility timeout longer than the time limit (so
a live, long job is not handed to a second worker).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from common.jobs import QUEUE
from common.settings import Settings, get_settings

logger = logging.getLogger(__name__)

TASK_MODULES = [
    "workers.tasks.export_onnx",
    "workers.tasks.export_tflite",
    "workers.tasks.compress",
    "workers.tasks.evaluate",
    "workers.tasks.optimize",
]


def create_celery(settings: Settings) -> Celery:
    app = Celery("posecompress", broker=settings.effective_redis_url, include=TASK_MODULES)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=settings.soft_time_limit,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.task_time_limit + 600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


@lru_cache(maxsize=1)
def worker_celery() -> Celery:
    """The worker process's app, from the process settings, built on first use."""
    return create_celery(get_settings())


def __getattr__(name: str) -> Celery:
    """``workers.celery_app.app`` (what ``celery -A workers.celery_app`` looks up), lazily."""
    if name == "app":
        return worker_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@worker_ready.connect
def _recover_on_start(sender: Any = None, **_: Any) -> None:
    """Recover jobs of dead workers now, then keep checking in the background."""
    from workers.recovery import start_recovery_thread

    start_recovery_thread(get_settings(), worker_celery())
