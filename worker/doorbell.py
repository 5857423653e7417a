"""A doorbell for the embedded SQLite broker: publishers ring, the consuming worker wakes at once.

A datagram socket in Linux's abstract namespace named after the broker file; a lost ring only
leaves the polling as it was (docs/design.md, "SQLite broker").
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import time

logger = logging.getLogger(__name__)


def bell_name(database: str) -> bytes:
    """Returns the abstract socket name of the broker file ``database`` (a filesystem path)."""
    digest = hashlib.sha256(os.path.abspath(database).encode()).hexdigest()[:24]
    return b"\0dfmod-broker-" + digest.encode()


class Doorbell:
    """One broker file's bell: :meth:`ring` from any process, :meth:`wait` in the consumer."""

    def __init__(self, database: str) -> None:
        self.name = bell_name(database)
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._listening = False

    def ring(self) -> None:
        """Tells the consumer (if any) that a message was published; never raises."""
        try:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            self._sender.sendto(b"!", self.name)
        except OSError:  # no listener, its buffer full (it will wake anyway), or no such sockets
            pass

    def wait(self, timeout: float) -> bool:
        """Sleeps until a ring or ``timeout`` seconds, swallows the rings that arrived, and
        returns whether it was rung."""
        listener = self._listen()
        if listener is None:
            time.sleep(timeout)
            return False
        readable, _, _ = select.select([listener], [], [], timeout)
        if readable:
            with contextlib.suppress(OSError):
                while listener.recv(64):
                    pass
        return bool(readable)

    def close(self) -> None:
        """Closes both sockets (the name is free again once the listener closes)."""
        for sock in (self._sender, self._listener):
            if sock is not None:
                sock.close()
        self._sender = self._listener = None
        self._listening = False

    def _listen(self) -> socket.socket | None:
        if not self._listening:
            self._listening = True  # one try: a second consumer process keeps polling
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                listener.bind(self.name)
            except OSError as exc:
                listener.close()
                logger.info("broker doorbell not bound (%s); polling only", exc)
            else:
                listener.setblocking(False)
                self._listener = listener
        return self._listener


_bells: dict[str, Doorbell] = {}  # by the broker file's absolute path
_by_url: dict[str, Doorbell | None] = {}  # every publish and poll asks: parse each URL once


def doorbell_for(url: str) -> Doorbell | None:
    """Returns this process's bell of the SQLite broker at SQLAlchemy ``url`` (None otherwise)."""
    if url in _by_url:
        return _by_url[url]
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    bell = None
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        key = os.path.abspath(database)
        bell = _bells.setdefault(key, Doorbell(key))
    return _by_url.setdefault(url, bell)
