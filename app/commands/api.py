"""``posecompress api``: the HTTP API alone (uvicorn); needs an external broker/DB or
a running ``serve`` for its Redis."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands.common import add_data_dir, add_host_port
from common.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("api", help="run the HTTP API only")
    add_host_port(parser)
    add_data_dir(parser)
    parser.set_defaults(handler=run)


def run(_args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0
