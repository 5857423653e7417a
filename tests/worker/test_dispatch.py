"""The worker's callback dispatch threads: run jobs, refuse when full, survive a failing job."""

from __future__ import annotations

import os
import threading
import time

import pytest

from worker.dispatch import Dispatcher, Reservation, dispatcher


def test_jobs_run_on_the_pool_threads_and_a_failing_job_does_not_stop_them() -> None:
    pool = Dispatcher(threads=2)
    ran: list[str] = []
    done = threading.Semaphore(0)

    def offer(job: object) -> None:  # waits (bounded) for an idle thread, as jobs finish
        deadline = time.monotonic() + 10
        while not pool.offer(job):  # type: ignore[arg-type]
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def boom() -> None:
        try:
            raise RuntimeError("receiver exploded")
        finally:
            done.release()

    def job() -> None:
        ran.append(threading.current_thread().name)
        done.release()

    offer(boom)
    for _ in range(4):
        offer(job)
    for _ in range(5):
        assert done.acquire(timeout=10)
    assert len(ran) == 4 and all(name.startswith("dfmod-dispatch-") for name in ran)


def test_no_idle_thread_refuses_so_the_caller_uses_the_broker() -> None:
    pool = Dispatcher(threads=1)
    release, started, ran = threading.Event(), threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(10)

    assert pool.offer(blocker)
    assert started.wait(10)  # the only thread is busy now: nothing may wait behind it
    assert not pool.offer(ran.set)
    release.set()
    deadline = time.monotonic() + 10
    while not pool.offer(ran.set):  # idle again once the blocker returned
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ran.wait(10)


def test_a_reservation_holds_the_thread_until_its_job_or_its_release() -> None:
    pool = Dispatcher(threads=1)
    ran = threading.Event()
    deadline = time.monotonic() + 10
    while not pool.reserve():  # the thread reports idle once it has started
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not pool.reserve() and not pool.offer(ran.set)  # held: nobody else gets it
    pool.release()
    assert pool.reserve()  # given back unused
    pool.submit(ran.set)
    assert ran.wait(10)
    deadline = time.monotonic() + 10
    while not pool.offer(lambda: None):  # idle again after the reserved job
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_reservation_takes_one_thread_at_most_and_gives_it_back_once() -> None:
    pool = Dispatcher(threads=1)
    deadline = time.monotonic() + 10
    first = Reservation(pool)
    while not first.take():  # the thread reports idle once it has started
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert first.take() and first.held  # already held: not a second permit
    assert not Reservation(pool).take()  # the only thread is held
    first.release()
    first.release()  # a second release gives nothing back twice
    second = Reservation(pool)
    assert second.take() and not Reservation(pool).take()
    ran = threading.Event()
    second.submit(ran.set)
    assert ran.wait(10) and not second.held
    with pytest.raises(RuntimeError):
        second.submit(ran.set)
    assert not Reservation(None).take()  # dispatch off: never held
    Reservation(None).release()


def test_one_dispatcher_per_process_and_none_when_off() -> None:
    assert dispatcher(0) is None
    assert dispatcher(3) is dispatcher(3)
    assert dispatcher(3).threads == 3
    from worker import dispatch

    assert (os.getpid(), 3) in dispatch._dispatchers
