"""``posecompress models import-default``: store the built-in model ``blazepose-full``.

Also used by ``serve``, which runs the import in a background process on first start
(:func:`start_background_import`) so the API answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import Any

from app.commands.common import add_data_dir
from common.settings import Settings

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="manage stored models")
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    importer = actions.add_parser(
        "import-default",
        help="store the built-in BlazePose model (from the mediapipe wheel) if missing",
    )
    add_data_dir(importer)
    importer.set_defaults(handler=run_import_default)


def run_import_default(_args: argparse.Namespace, settings: Settings) -> int:
    from app.serving.builtin_import import import_default
    from model_store import open_store
    from pose_core.assets import AssetUnavailableError

    store = open_store(settings.effective_database_url, settings.resolved_data_dir)
    try:
        version, created = import_default(store, assets=settings.resolved_asset_dir)
    except AssetUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    artifacts = ", ".join(f"{a.role} {a.sha256[:12]} ({a.size} B)" for a in version.artifacts)
    state = "stored" if created else "already present:"
    print(f"{state} {version.model} v{version.number} [{artifacts}]")
    return 0


def start_background_import(
    settings: Settings, env: dict[str, str]
) -> subprocess.Popen[bytes] | None:
    """Start ``models import-default`` as a low-priority child when the built-in model is
    missing (None when it is stored or ``settings.import_default`` is off)."""
    from app.serving.builtin_import import existing_builtin
    from model_store import open_store

    if not settings.import_default:
        return None
    store = open_store(settings.effective_database_url, settings.resolved_data_dir)
    try:
        if existing_builtin(store) is not None:
            return None
    finally:
        store.close()
    logger.info("importing the built-in model in the background (first start)")
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "models", "import-default"],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: os.nice(5),
    )


def stop_background_import(process: subprocess.Popen[bytes] | None) -> None:
    from app.embedded.supervisor import stop_process

    if process is not None:
        stop_process(process, "import-default", 15, 10.0)
