"""Closed-loop HTTP load and process memory sampling for the pipeline benchmarks.

:func:`closed_loop` runs a bounded number of requests from a fixed number of client threads (each
sends, waits for its answer, then sends the next); :class:`RssSampler` records the peak resident
memory of process trees from ``/proc`` while a load runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

REQUEST_DEADLINE_S = 60.0


@dataclass
class Load:
    """What one closed-loop load level measured."""

    label: str
    concurrency: int
    images_per_s: float
    latencies_s: list[float]
    server_s: list[float] = field(default_factory=list)
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")
        )


def closed_loop(
    label: str,
    send: Callable[[requests.Session, bytes], float | None],
    images: list[bytes],
    *,
    concurrency: int,
    total: int,
) -> Load:
    """Returns the load result of ``total`` requests from ``concurrency`` clients (bounded)."""
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    server: list[float] = []
    errors = [0]

    def client() -> None:
        with requests.Session() as http:
            while True:
                with lock:
                    index = next(counter)
                if index >= total:
                    return
                started = time.perf_counter()
                try:
                    ok = send(http, images[index % len(images)])
                except requests.RequestException:
                    ok = None
                with lock:
                    if ok is None:
                        errors[0] += 1
                    else:
                        latencies.append(time.perf_counter() - started)
                        server.append(ok)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=REQUEST_DEADLINE_S * total)
    elapsed = time.perf_counter() - started
    return Load(label, concurrency, len(latencies) / elapsed, latencies, server, errors[0])


def _tree(root: int) -> set[int]:
    """Returns the pid and every descendant pid of ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parts = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(parts[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def tree_rss_kib(root: int) -> int:
    """Returns the summed VmRSS (KiB) of a process tree."""
    total = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def tree_cpu_s(root: int) -> float:
    """Returns the user+system CPU seconds the live processes of a tree have used."""
    ticks = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the resident memory of process trees (root pid + descendants) in the background."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots, self.peak = roots, dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu(self) -> dict[str, float]:
        """Returns each tree's CPU seconds so far (difference two calls to get a window's)."""
        return {name: tree_cpu_s(pid) for name, pid in self.roots.items()}

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.roots.items():
                self.peak[name] = max(self.peak[name], tree_rss_kib(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
