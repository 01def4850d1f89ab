"""Storing the built-in model ``blazepose-full`` as version 1, once.

Run by ``posecompress models import-default`` and in the background by the first
``posecompress serve``. The slow part (import + ONNX export, ~30-40 s) happens before the
version row exists, so a killed import leaves nothing behind. Progress is written to
``<data dir>/assets/import-default.json`` so the API can say why the model is missing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from app.errors import ApiError
from model_store import NotFoundError, Store, VersionInfo
from pose_core.builtin import BUILTIN_MODEL_NAME

logger = logging.getLogger(__name__)

STATUS_FILE = "import-default.json"


def asset_dir(data_dir: Path) -> Path:
    """Where the mediapipe files (and the import status) are cached."""
    return data_dir / "assets"


def existing_builtin(store: Store) -> VersionInfo | None:
    try:
        return store.models.resolve(BUILTIN_MODEL_NAME, "latest")
    except NotFoundError:
        return None


def import_default(store: Store, *, assets: Path | None = None) -> tuple[VersionInfo, bool]:
    """Store ``blazepose-full`` unless a ready version exists; returns (version, created).

    Raises:
        pose_core.assets.AssetUnavailableError: the mediapipe wheel cannot be obtained.
    """
    from pose_core.builtin import build_blazepose_bundle

    found = existing_builtin(store)
    if found is not None:
        return found, False
    assets = assets or asset_dir(store.data_dir)
    start = time.time()
    write_status(store.data_dir, {"state": "running", "started_at": start})
    try:
        with tempfile.TemporaryDirectory(dir=store.scratch_dir, prefix="builtin-") as tmp:
            bundle = build_blazepose_bundle(assets, Path(tmp))
            found = existing_builtin(store)  # another process may have won meanwhile
            if found is not None:
                return found, False
            pending = store.models.create_pending_version(
                BUILTIN_MODEL_NAME,
                format="onnx",
                recipe={"source": "builtin", "builder": "pose_core.builtin.build_blazepose_bundle"},
                manifest=bundle.manifest,
            )
            try:
                version = store.models.finalize_version(
                    BUILTIN_MODEL_NAME,
                    pending.number,
                    bundle.artifacts,
                    report={"import_seconds": {k: round(v, 2) for k, v in bundle.timings.items()}},
                )
            except Exception as exc:
                store.models.mark_failed(BUILTIN_MODEL_NAME, pending.number, str(exc))
                raise
    except Exception as exc:
        write_status(
            store.data_dir,
            {"state": "failed", "started_at": start, "finished_at": time.time(), "error": str(exc)},
        )
        raise
    elapsed = time.time() - start
    write_status(
        store.data_dir,
        {"state": "done", "started_at": start, "finished_at": time.time(), "seconds": elapsed},
    )
    logger.info("stored %s v%d in %.1f s", BUILTIN_MODEL_NAME, version.number, elapsed)
    return version, True


def write_status(data_dir: Path, status: dict[str, Any]) -> None:
    folder = asset_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".status-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({**status, "pid": os.getpid()}, handle)
    os.replace(tmp, folder / STATUS_FILE)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((asset_dir(data_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def builtin_unavailable_error(data_dir: Path) -> ApiError | None:
    """Why the built-in model is missing (503), if an import is running or failed."""
    status = read_status(data_dir)
    if status is None:
        return None
    if status.get("state") == "running" and _alive(status.get("pid")):
        waited = time.time() - float(status.get("started_at", time.time()))
        return ApiError(
            503,
            "model_importing",
            f"the built-in model {BUILTIN_MODEL_NAME!r} is being imported "
            f"(started {waited:.0f} s ago, usually under a minute); retry shortly",
        )
    if status.get("state") == "failed":
        return ApiError(
            503,
            "model_unavailable",
            f"the built-in model {BUILTIN_MODEL_NAME!r} could not be imported: "
            f"{status.get('error')}. Run `posecompress models import-default`.",
        )
    return None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
