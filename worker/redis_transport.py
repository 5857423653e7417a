"""kombu's Redis transport with one redis-py client per connection pool, instead of one per
operation. Importing it registers the ``dfmodredis://`` scheme that :func:`broker_url_for` gives
plain ``redis://`` URLs.

kombu builds a new ``redis.Redis`` for every publish, acknowledgement and queue check
(``Channel._create_client``), and redis-py 5+ fills each new client's table of ~170 response
callbacks key by key (redis/redis-py#3624, still open). A client holds no connection of its own:
every command takes one from the pool, so one client per pool serves every caller, as redis-py
documents for sharing between threads. Pipelines, pub/sub objects and scripts are still made per
use (docs/design.md, "Redis broker clients"). Like :mod:`worker.sqlite_broker` it
overrides a private method of kombu, which is pinned to one minor version in pyproject.toml;
``tests/worker/test_redis_transport.py`` checks it on real Redis.
"""

from __future__ import annotations

from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis

REDIS_ALIAS = "dfmodredis"


class SharedClientChannel(kombu_redis.Channel):
    """kombu's Redis channel, handing out one client per connection pool (see the module).

    Only the plain clients are shared: the event loop's (``asynchronous=True``) are made once per
    channel by kombu and pinned to one connection each for BRPOP and pub/sub."""

    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        # A closed channel drops its pools; the next call makes a new pool, and a new client.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class SharedClientTransport(kombu_redis.Transport):
    """kombu's Redis transport on :class:`SharedClientChannel`; selected by ``dfmodredis://``."""

    Channel = SharedClientChannel


kombu_transport.TRANSPORT_ALIASES.setdefault(REDIS_ALIAS, f"{__name__}:SharedClientTransport")


def broker_url_for(url: str) -> str:
    """Returns the URL Celery connects with: plain ``redis://`` goes to this transport; TLS
    (``rediss://``), sockets and Sentinel keep kombu's own."""
    return REDIS_ALIAS + url[len("redis") :] if url.startswith("redis://") else url
