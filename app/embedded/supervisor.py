"""Starts, watches and stops the child processes of ``posecompress serve``.

Each child runs in its own process group, so a Ctrl-C reaches only the supervisor, which
then stops the children in order: API, worker, Redis; whatever a child forked (Celery's pool
processes) is killed with its group once the child has exited or its grace has passed.

A worker that dies is restarted with an exponential back-off (the API keeps serving and
reports the worker in ``/ready`` and ``/metrics`` through :mod:`app.embedded.worker_status`);
a child that is not restartable (Redis, the API) stops the service when it dies.
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
from pathlib import Path

from app.embedded.worker_status import WorkerStatus, remove_status, write_status

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    restart: bool
    """Restart when it dies (the worker); otherwise its death stops the service."""
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 10.0
    signal_group: bool = True
    """Send ``stop_signal`` to the whole process group; False for Celery, whose main process
    does the warm shutdown (its pool processes finish their jobs unless they get it too)."""
    process: subprocess.Popen[bytes] | None = None
    exits: list[float] = field(default_factory=list)
    """monotonic times of its recent exits (the back-off counts them)."""
    next_start: float | None = None

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            list(self.argv), env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def stop_process(
    process: subprocess.Popen[bytes], name: str, sig: int, timeout_s: float, group: bool = True
) -> int | None:
    """Signal the process group (or only the process), wait, then SIGKILL the group."""
    if process.poll() is None:
        if group:
            _signal_group(process.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
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
    """Runs children until a stop signal or the death of a child that is not restartable."""

    #: back-off before restart n (n exits in the last minute): 0 s, then 1, 2, 4, ... 60 s
    BACKOFF_BASE_S = 1.0
    BACKOFF_MAX_S = 60.0
    EXIT_WINDOW_S = 60.0

    def __init__(self, env: dict[str, str], status_file: Path | None = None) -> None:
        self.env = env
        self.status_file = status_file
        self.children: list[Child] = []
        self._stopping = False

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start(self.env)
        self._report(child)
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
                if not self.watch(child):
                    self._stopping, code = True, 1
                    break
            time.sleep(0.2)
        self.stop_all()
        return code

    def watch(self, child: Child) -> bool:
        """One look at ``child``: restart it when its back-off has passed. False when it died
        and the service must stop."""
        if child.alive():
            return True
        now = time.monotonic()
        if child.next_start is None:
            returncode = child.process.returncode if child.process else None
            if not child.restart:
                logger.error("%s exited with %s; stopping the service", child.name, returncode)
                return False
            child.exits = [t for t in child.exits if now - t < self.EXIT_WINDOW_S] + [now]
            delay = self.backoff_s(len(child.exits))
            child.next_start = now + delay
            logger.warning(
                "%s exited with %s (%d exits in %.0f s); restarting it in %.0f s",
                child.name,
                returncode,
                len(child.exits),
                self.EXIT_WINDOW_S,
                delay,
            )
            self._report(child)
        if now >= child.next_start:
            child.next_start = None
            child.start(self.env)
            self._report(child)
        return True

    def backoff_s(self, exits: int) -> float:
        if exits <= 1:
            return 0.0
        return min(self.BACKOFF_MAX_S, self.BACKOFF_BASE_S * 2.0 ** (exits - 2))

    def _report(self, child: Child) -> None:
        if self.status_file is None or not child.restart:
            return
        now = time.monotonic()
        status = WorkerStatus(
            supervisor_pid=os.getpid(),
            up=child.next_start is None and child.alive(),
            exits_last_minute=sum(1 for t in child.exits if now - t < self.EXIT_WINDOW_S),
            next_start_in_s=None if child.next_start is None else child.next_start - now,
        )
        write_status(self.status_file, status)

    def stop_all(self) -> None:
        """Stop children in reverse start order (API first, Redis last)."""
        for child in reversed(self.children):
            if child.process is not None:
                code = stop_process(
                    child.process,
                    child.name,
                    child.stop_signal,
                    child.stop_timeout_s,
                    group=child.signal_group,
                )
                logger.info("%s stopped (exit %s)", child.name, code)
        if self.status_file is not None:
            remove_status(self.status_file)
