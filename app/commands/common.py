"""Helpers shared by subcommands: options that map onto settings."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# CLI option dest -> environment variable read by common.settings.Settings
OVERRIDES = {
    "host": "POSECOMPRESS_HOST",
    "port": "POSECOMPRESS_PORT",
    "data_dir": "POSECOMPRESS_DATA_DIR",
    "job_workers": "POSECOMPRESS_JOB_WORKERS",
}


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="metadata, artifacts, datasets [./posecompress-data]"
    )


def add_host_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address [127.0.0.1]")
    parser.add_argument("--port", type=int, help="HTTP port [8000]")


def apply_overrides(args: argparse.Namespace) -> None:
    """Write given options into the environment before settings are read, so this process
    and every child it starts see the same configuration."""
    for dest, env in OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "data_dir":
            value = Path(value).expanduser().resolve()
        os.environ[env] = str(value)
