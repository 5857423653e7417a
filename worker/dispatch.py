"""First callback attempts from a small pool of threads in the worker process.

:meth:`Dispatcher.offer` refuses when no thread is idle (the caller enqueues the delivery task
instead); an attempt lost with the process is left to the sweeper (docs/design.md, "Workers").
:meth:`Dispatcher.reserve` takes an idle thread before its job exists (:class:`Reservation`):
the scorer takes one just before the verdict's write, which then stores the outbox row already
claimed for its first attempt (worker.tasks).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Dispatcher:
    """A fixed set of daemon threads; a job is accepted only when one of them is idle.

    There is no backlog: a callback never waits behind another receiver's slow answer here. With
    every thread busy, :meth:`offer` refuses at once and the caller uses the broker.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one permit per thread waiting for a job
        self._started = False
        self._lock = threading.Lock()

    def offer(self, job: Callable[[], object]) -> bool:
        """Hands ``job`` to an idle thread; returns False (nothing queued) when none is idle."""
        if not self.reserve():
            return False
        self.submit(job)
        return True

    def reserve(self) -> bool:
        """Takes an idle thread for a job to come; returns False when none is idle. Follow a
        reservation with exactly one :meth:`submit` or :meth:`release`."""
        self._start()
        return self._idle.acquire(blocking=False)

    def submit(self, job: Callable[[], object]) -> None:
        """Hands ``job`` to the thread that :meth:`reserve` took."""
        self._jobs.put(job)

    def release(self) -> None:
        """Gives back a reservation that will have no job."""
        self._idle.release()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for number in range(self.threads):
                thread = threading.Thread(
                    target=self._run, name=f"dfmod-dispatch-{number}", daemon=True
                )
                thread.start()
            self._started = True

    def _run(self) -> None:
        while True:
            self._idle.release()
            job = self._jobs.get()
            try:
                job()
            except Exception:  # the row stays pending; its lease expiry hands it to the sweeper
                logger.exception("callback dispatch job failed")


class Reservation:
    """At most one idle thread of a dispatcher (or of none), taken when :meth:`take` is called
    and then either given a job (:meth:`submit`) or given back (:meth:`release`)."""

    def __init__(self, pool: Dispatcher | None) -> None:
        self._pool, self.held = pool, False

    def take(self) -> bool:
        """Takes an idle thread unless one is held already; returns whether one is held."""
        if self._pool is not None and not self.held:
            self.held = self._pool.reserve()
        return self.held

    def submit(self, job: Callable[[], object]) -> None:
        """Hands ``job`` to the held thread."""
        if self._pool is None or not self.held:
            raise RuntimeError("no dispatch thread is held")
        self.held = False
        self._pool.submit(job)

    def release(self) -> None:
        """Gives the held thread back, if any."""
        if self._pool is not None and self.held:
            self.held = False
            self._pool.release()


_dispatchers: dict[tuple[int, int], Dispatcher] = {}
_dispatchers_lock = threading.Lock()


def dispatcher(threads: int) -> Dispatcher | None:
    """Returns this process's dispatcher with ``threads`` threads (None when 0: dispatch off).

    Keyed by pid so a forked pool child never uses threads that stayed in its parent.
    """
    if threads <= 0:
        return None
    key = (os.getpid(), threads)
    with _dispatchers_lock:
        found = _dispatchers.get(key)
        if found is None:
            found = _dispatchers[key] = Dispatcher(threads)
        return found
