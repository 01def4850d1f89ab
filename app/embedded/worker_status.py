"""What ``posecompress serve``'s supervisor knows about its worker, for the API's ``/ready``
and ``/metrics``: a small JSON file in the data directory, replaced atomically."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings

FILE_NAME = "worker-status.json"


@dataclass(frozen=True)
class WorkerStatus:
    supervisor_pid: int
    up: bool
    exits_last_minute: int
    """Worker exits in the last 60 s."""
    next_start_in_s: float | None
    """While the worker is down: seconds until the supervisor starts it again (back-off)."""

    def describe(self) -> str:
        if self.up:
            return "ok"
        wait = f", next start in {self.next_start_in_s:.0f} s" if self.next_start_in_s else ""
        return f"down: {self.exits_last_minute} exits in the last minute{wait}"


def status_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def worker_status(settings: Settings) -> WorkerStatus | None:
    """The supervised worker of the service using ``settings``' data directory, if any."""
    return read_status(status_path(settings.resolved_data_dir))


def write_status(path: Path, status: WorkerStatus) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(asdict(status)), encoding="utf-8")
    os.replace(partial, path)


def read_status(path: Path) -> WorkerStatus | None:
    """The status written by a live supervisor; None without one (``posecompress api``, or a
    file left by a supervisor that is gone)."""
    try:
        status = WorkerStatus(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(status.supervisor_pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return status


def remove_status(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
