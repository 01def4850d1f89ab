"""``posecompress worker``: a Celery worker consuming the job queue."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import add_data_dir
from common.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run a job worker (Celery)")
    add_data_dir(parser)
    parser.add_argument(
        "--job-workers", type=int, help="concurrent jobs in this worker (processes) [1]"
    )
    parser.set_defaults(handler=run)


def run(_args: argparse.Namespace, settings: Settings) -> int:
    from common.jobs import QUEUE
    from workers.celery_app import worker_celery

    worker_celery().worker_main(
        [
            "worker",
            f"--concurrency={settings.job_workers}",
            "--pool=prefork",
            f"--queues={QUEUE}",
            f"--loglevel={settings.log_level.upper()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
