"""``posecompress serve``: everything in one command.

Embedded defaults (no configuration): SQLite + artifacts under the data dir, a private
Redis on a unix socket, one Celery worker process (``--job-workers`` pool processes)
and the API. ``POSECOMPRESS_REDIS_URL`` / ``POSECOMPRESS_DATABASE_URL`` replace the
embedded Redis / SQLite. Ctrl-C or SIGTERM stops every child.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from app.commands.common import add_data_dir, add_host_port
from common.settings import Settings

logger = logging.getLogger(__name__)

#: On stop, the worker's running jobs get this long to finish before they are killed (and
#: re-queued from their checkpoints by the next worker's startup recovery).
WORKER_STOP_GRACE_S = 15.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run API, worker and (embedded) Redis")
    add_host_port(parser)
    add_data_dir(parser)
    parser.add_argument("--job-workers", type=int, help="concurrent jobs [1]")
    parser.set_defaults(handler=run)


def run(_args: argparse.Namespace, settings: Settings) -> int:
    from app.embedded.redis_server import start_redis, wait_for_redis
    from app.embedded.supervisor import Child, Supervisor
    from app.embedded.worker_status import status_path
    from model_store import open_store

    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.effective_database_url, data_dir)  # creates/checks schema
    store.close()

    env = dict(os.environ)
    env["POSECOMPRESS_DATA_DIR"] = str(data_dir)
    supervisor = Supervisor(env, status_file=status_path(data_dir))
    if settings.redis_url is None:
        redis_child = Child("redis", [], restart=False)
        redis_child.process, socket = start_redis(data_dir)
        supervisor.children.append(redis_child)
        try:
            wait_for_redis(socket, redis_child.process)
        except (RuntimeError, TimeoutError):
            supervisor.stop_all()
            raise
        env["POSECOMPRESS_REDIS_URL"] = f"redis+socket://{socket}"
        logger.info("embedded redis on %s", socket)
    python = [sys.executable, "-m", "app.cli"]
    supervisor.add(
        Child(
            "worker",
            [*python, "worker", f"--job-workers={settings.job_workers}"],
            restart=True,
            stop_timeout_s=WORKER_STOP_GRACE_S,
            signal_group=False,
        )
    )
    supervisor.add(Child("api", [*python, "api"], restart=False, stop_signal=signal.SIGINT))
    logger.info(
        "posecompress serving on http://%s:%d (data in %s)", settings.host, settings.port, data_dir
    )
    from app.commands.models import start_background_import, stop_background_import

    importer = start_background_import(settings, env)
    try:
        return supervisor.run()
    finally:
        stop_background_import(importer)
