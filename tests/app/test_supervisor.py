"""``posecompress serve``'s supervisor: the worker's warm stop and its restart back-off."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

from app.embedded.supervisor import Child, Supervisor
from app.embedded.worker_status import read_status

#: A stand-in for Celery's main process: on SIGTERM it keeps waiting for its pool child.
WARM_MAIN = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, lambda *_: None)
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]).wait()
"""
#: A stand-in for a pool process running a job: logs any SIGTERM, finishes its work.
POOL_CHILD = """
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
signal.signal(signal.SIGTERM, lambda *_: log.write("sigterm\\n"))
log.write("started\\n")
time.sleep(1.5)
log.write("done\\n")
"""


def _wait_for(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_stop_lets_the_running_job_finish(tmp_path: Path):
    log = tmp_path / "job.log"
    worker = Child(
        "worker",
        [sys.executable, "-c", WARM_MAIN, POOL_CHILD, str(log)],
        restart=True,
        stop_timeout_s=30,
        signal_group=False,
    )
    supervisor = Supervisor(dict(os.environ), status_file=tmp_path / "status.json")
    supervisor.add(worker)
    _wait_for(lambda: log.exists() and "started" in log.read_text())
    supervisor.stop_all()
    assert log.read_text().split() == ["started", "done"]  # no SIGTERM reached the job
    assert not (tmp_path / "status.json").exists()


def test_a_crash_looping_worker_is_restarted_with_back_off(tmp_path: Path):
    status_file = tmp_path / "status.json"
    supervisor = Supervisor(dict(os.environ), status_file=status_file)
    supervisor.BACKOFF_BASE_S = 0.02
    crashing = supervisor.add(Child("worker", [sys.executable, "-c", "exit(3)"], restart=True))
    delays = []
    deadline = time.monotonic() + 60
    while len(crashing.exits) < 8:
        assert time.monotonic() < deadline
        was_waiting = crashing.next_start is not None
        assert supervisor.watch(crashing)  # the service keeps running
        if crashing.next_start is not None and not was_waiting:
            delays.append(crashing.next_start - time.monotonic())
            status = json.loads(status_file.read_text())
            assert status["up"] is False and status["exits_last_minute"] == len(crashing.exits)
        time.sleep(0.01)
    assert len(delays) == 7  # the first restart is at once, then each waits longer
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    assert delays[-1] > 1.0  # 0.02 s * 2**6 after the 8th exit in a minute
    status = read_status(status_file)
    assert status is not None and status.exits_last_minute == 8
    supervisor.stop_all()


def test_back_off_doubles_up_to_a_minute():
    supervisor = Supervisor({})
    assert [supervisor.backoff_s(n) for n in (1, 2, 3, 4, 9, 100)] == [0, 1, 2, 4, 60, 60]


def test_redis_or_api_death_still_stops_the_service(tmp_path: Path):
    supervisor = Supervisor(dict(os.environ))
    api = supervisor.add(Child("api", [sys.executable, "-c", "exit(1)"], restart=False))
    _wait_for(lambda: not api.alive())
    assert supervisor.watch(api) is False
    supervisor.stop_all()
