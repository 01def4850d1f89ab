"""``posecompress`` command line. Each subcommand lives in its own module under
``app/commands/`` and exposes ``register(subparsers)``; add a module to
:data:`COMMAND_MODULES` to add a subcommand (e.g. ``models``, ``eval``, ``compress``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = [
    "app.commands.serve",
    "app.commands.api",
    "app.commands.worker",
    "app.commands.models",
    "app.commands.eval",
    "app.commands.compress",
    "app.commands.optimize",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posecompress", description="Compress human-pose models and serve keypoints."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from app.commands.common import apply_overrides
    from common.settings import get_settings

    apply_overrides(args)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
    return int(args.handler(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
