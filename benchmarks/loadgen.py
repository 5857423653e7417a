"""Closed-loop HTTP load and process memory sampling for the pipeline benchmarks.

:func:`closed_loop` runs a bounded number of requests from a fixed number of client threads (each
sends, waits for its answer, then sends the next); :class:`RssSampler` records the peak resident
memory of process trees from ``/proc`` while a load runs.

The load generator shares the machine with the system it measures, so it is kept cheap: each
client thread holds one keep-alive :class:`Connection` (``http.client``, no per-request session
machinery), request bodies are encoded once before the load starts (:func:`multipart_body`), and
the memory sampler reads ``/proc`` once per sample for all the trees it watches.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

REQUEST_DEADLINE_S = 60.0
Payload = TypeVar("Payload")


class Connection:
    """One client's keep-alive HTTP/1.1 connection to ``base_url`` (loopback, plain HTTP).

    A request on a connection the server has since closed (an idle keep-alive timeout) is sent
    once more on a fresh one; any other failure raises ``OSError`` or ``http.client.HTTPException``.
    """

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// base URL, got {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Returns (status, body) of ``POST path``."""
        reused = self._conn is not None
        try:
            return self._post(path, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            return self._post(path, body, headers)  # the server closed an idle connection

    def _post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            self._conn.request("POST", self._prefix + path, body=body, headers=dict(headers))
            response = self._conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def multipart_body(fields: Mapping[str, str], file_field: str, data: bytes) -> tuple[bytes, str]:
    """Returns (body, Content-Type) of a ``multipart/form-data`` request with text ``fields``
    and ``data`` as the file part ``file_field``."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="m"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body = b"".join([*parts, data, f"\r\n--{boundary}--\r\n".encode()])
    return body, f"multipart/form-data; boundary={boundary}"


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
    rss_mib: dict[str, float] = field(default_factory=dict)  # peak per process tree, this level

    def pct(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")
        )


def closed_loop(
    label: str,
    base_url: str,
    send: Callable[[Connection, Payload], float | None],
    payloads: Sequence[Payload],
    *,
    concurrency: int,
    total: int,
) -> Load:
    """Returns the load result of ``total`` requests from ``concurrency`` clients (bounded).

    Each client holds a :class:`Connection` to ``base_url`` and sends ``payloads`` in turn;
    ``send`` returns the server-side latency in seconds, or None for a failed request.
    """
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    server: list[float] = []
    errors = [0]

    def client() -> None:
        with Connection(base_url, timeout_s=REQUEST_DEADLINE_S) as connection:
            while True:
                with lock:
                    index = next(counter)
                if index >= total:
                    return
                started = time.perf_counter()
                try:
                    ok = send(connection, payloads[index % len(payloads)])
                except (OSError, http.client.HTTPException):
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


def _parents() -> dict[int, int]:
    """Returns {pid: parent pid} of every live process (from /proc)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"/proc/{name}/stat", "rb") as stat,
            ):
                parents[int(name)] = int(stat.read().rsplit(b")", 1)[1].split()[1])
    return parents


def _tree(root: int, parents: dict[int, int] | None = None) -> set[int]:
    """Returns the pid and every descendant pid of ``root``."""
    parents = _parents() if parents is None else parents
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def tree_rss_kib(root: int, parents: dict[int, int] | None = None) -> tuple[int, int]:
    """Returns the summed VmRSS (KiB) of a process tree and how many processes it counted."""
    total, counted = 0, 0
    for pid in _tree(root, parents):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    counted += 1
    return total, counted


def tree_cpu_s(root: int) -> float:
    """Returns the user+system CPU seconds the live processes of a tree have used."""
    ticks = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_minor_faults(root: int) -> int:
    """Returns the minor page faults the live processes of a tree have taken (a page mapped in
    for the first time, zero-filled or shared, without reading the disk)."""
    faults = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            faults += int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    return faults


def named_cpu_s(names: tuple[str, ...]) -> float:
    """Returns the user+system CPU seconds that the live processes whose command name is one of
    ``names`` have used (the database and broker servers, which no tree of the stack holds)."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            head, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
            if head.partition("(")[2] in names:
                fields = rest.split()
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the resident memory of process trees (root pid + descendants) in the background,
    every half second: the peak over the whole sampling (``peak``, KiB) and over windows that
    :meth:`window` opens and closes (one per load level)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots, self.peak = roots, dict.fromkeys(roots, 0)
        self.processes = dict.fromkeys(roots, 0)  # the tree's size at its peak
        self._window = dict.fromkeys(roots, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu(self) -> dict[str, float]:
        """Returns each tree's CPU seconds so far (difference two calls to get a window's)."""
        return {name: tree_cpu_s(pid) for name, pid in self.roots.items()}

    def minor_faults(self) -> dict[str, int]:
        """Returns each tree's minor page faults so far (difference two calls, as for cpu)."""
        return {name: tree_minor_faults(pid) for name, pid in self.roots.items()}

    def window(self) -> dict[str, float]:
        """Returns each tree's peak RSS in MiB since the previous call (or the start) and opens
        the next window; it samples once first, so even a short window has a sample."""
        self._sample()
        with self._lock:
            window, self._window = self._window, dict.fromkeys(self.roots, 0)
        return {name: kib / 1024 for name, kib in window.items()}

    def _sample(self) -> None:
        parents = _parents()
        for name, pid in self.roots.items():
            kib, processes = tree_rss_kib(pid, parents)
            with self._lock:
                self._window[name] = max(self._window[name], kib)
                if kib > self.peak[name]:
                    self.peak[name], self.processes[name] = kib, processes

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
