"""Starts, watches and stops the child processes of ``posecompress serve``.

Each child runs in its own process group, so stopping a child also stops anything it
forked (e.g. Celery's pool processes), and a Ctrl-C reaches only the supervisor, which
then stops the children in order: API, worker, Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    restart: bool
    """Restart when it dies (the worker); otherwise its death stops the service."""
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 10.0
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            list(self.argv), env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def stop_process(
    process: subprocess.Popen[bytes], name: str, sig: int, timeout_s: float
) -> int | None:
    """Signal the process group, wait, then SIGKILL the group if it lingers."""
    if process.poll() is None:
        _signal_group(process.pid, sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", name, timeout_s)
    # Whatever is left in the group (orphaned pool processes) goes too.
    _signal_group(process.pid, signal.SIGKILL)
    try:
        return process.wait(5)
    except subprocess.TimeoutExpired:
        return None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Runs children until a stop signal or an unrecoverable child death."""

    MAX_RESTARTS_PER_MINUTE = 5

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []
        self._stopping = False

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start(self.env)
        return child

    def request_stop(self, signum: int, _frame: object) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        self._stopping = True

    def run(self) -> int:
        """Block until stopped; return the exit code."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        code = 0
        while not self._stopping:
            for child in self.children:
                if child.alive():
                    continue
                returncode = child.process.returncode if child.process else None
                if not child.restart or not self._may_restart(child):
                    logger.error("%s exited with %s; stopping the service", child.name, returncode)
                    self._stopping, code = True, 1
                    break
                logger.warning("%s exited with %s; restarting it", child.name, returncode)
                child.start(self.env)
            time.sleep(0.2)
        self.stop_all()
        return code

    def _may_restart(self, child: Child) -> bool:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < 60] + [now]
        return len(child.restarts) <= self.MAX_RESTARTS_PER_MINUTE

    def stop_all(self) -> None:
        """Stop children in reverse start order (API first, Redis last)."""
        for child in reversed(self.children):
            if child.process is not None:
                code = stop_process(
                    child.process, child.name, child.stop_signal, child.stop_timeout_s
                )
                logger.info("%s stopped (exit %s)", child.name, code)
