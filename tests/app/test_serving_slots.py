"""FairSlots: a bounded number of holders, admitted first come, first served."""

from __future__ import annotations

import threading
import time

import pytest

from app.serving.slots import FairSlots


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_waiters_are_admitted_in_arrival_order() -> None:
    slots = FairSlots(1)
    admitted: list[int] = []
    threads = []

    def wait_for_slot(index: int) -> None:
        with slots:
            admitted.append(index)

    with slots:
        for index in range(5):
            thread = threading.Thread(target=wait_for_slot, args=(index,))
            thread.start()
            threads.append(thread)
            _wait_until(lambda n=index + 1: len(slots._waiters) == n)
    for thread in threads:
        thread.join(10)
    assert admitted == [0, 1, 2, 3, 4]


def test_at_most_count_hold_a_slot() -> None:
    slots = FairSlots(2)
    holding = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal holding, most
        for _ in range(20):
            with slots:
                with lock:
                    holding += 1
                    most = max(most, holding)
                time.sleep(0.0005)
                with lock:
                    holding -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert 1 <= most <= 2 and holding == 0
    with slots, slots:  # both free again
        pass


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairSlots(0)


def test_malloc_arenas_can_be_limited() -> None:
    from app.serving.malloc import limit_malloc_arenas

    assert limit_malloc_arenas(2) is True  # glibc (Linux CI)
