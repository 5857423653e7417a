"""The SSRF guard for every outbound request (media_url fetches and callbacks).

Only http(s) without credentials to hosts whose every address is global or allow-listed
(``DFMOD_OUTBOUND_ALLOWLIST``); :func:`safe_session` re-checks every request and connects to the
address it checked (docs/design.md, "Storage, security and the webhook API").
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.exceptions import NewConnectionError
from urllib3.util import connection as urllib3_connection

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOWED_SCHEMES = ("http", "https")
AllowList = str | Iterable[str] | Iterable[Network] | None


class OutboundBlocked(ValueError):
    """An outbound URL that the guard refuses; the message says why and what is expected."""


def parse_allowlist(value: str | Iterable[str] | None) -> tuple[Network, ...]:
    """Returns networks from a comma-separated CIDR string (or an iterable of CIDRs)."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"allow-list entry {item!r}: expected a CIDR like 10.0.0.0/8") from exc
    return tuple(networks)


def _inet_aton_part(part: str) -> int | None:
    if part[:2].lower() == "0x":
        digits = part[2:] or "0"
        return int(digits, 16) if all(c in "0123456789abcdefABCDEF" for c in digits) else None
    if not part.isdigit():
        return None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Returns the address for inet_aton-style hosts (decimal, octal, hex, 1-4 parts)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    values = [_inet_aton_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    *head, last = [int(v) for v in values if v is not None]
    if any(v > 255 for v in head) or last >= 2 ** (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number += value << (24 - 8 * index)
    return ipaddress.IPv4Address(number)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Returns the IPv4 addresses inside an IPv6 one (mapped, 6to4, Teredo, NAT64, ::a.b.c.d)."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    numeric = _numeric_ipv4(literal)
    if numeric is not None:
        return [numeric]
    try:
        infos = socket.getaddrinfo(literal, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundBlocked(f"host {host!r} does not resolve: {exc}") from exc
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )


def _is_public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def is_allowed_address(address: IPAddress, allowlist: Sequence[Network] = ()) -> bool:
    """Returns whether one address may be contacted: global, or inside the allow-list.

    An IPv6 address that embeds an IPv4 address is judged by the IPv4 address as well.
    """
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    candidates = [address, *embedded]
    return all(_is_public(c) or any(c in net for net in allowlist) for c in candidates)


def check_url(url: str, *, allowlist: AllowList = ()) -> list[str]:
    """Returns the addresses ``url`` resolves to; raises OutboundBlocked if one is unsafe."""
    networks = _networks(allowlist)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise OutboundBlocked(f"{url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ALLOWED_SCHEMES:
        raise OutboundBlocked(f"scheme {parts.scheme!r} is not allowed; expected http or https")
    if not parts.hostname:
        raise OutboundBlocked(f"{url!r} has no host; expected http(s)://host/path")
    if parts.username is not None or parts.password is not None:
        raise OutboundBlocked("credentials in the URL are not allowed")
    addresses = _resolve(parts.hostname, port)
    blocked = [a for a in addresses if not is_allowed_address(a, networks)]
    if blocked or not addresses:
        shown = blocked[0] if blocked else "nothing"
        raise OutboundBlocked(
            f"host {parts.hostname!r} resolves to {shown}, which is not a public address; "
            "expected a publicly routable host"
        )
    return [str(a) for a in addresses]


def _networks(value: AllowList) -> tuple[Network, ...]:
    if isinstance(value, (tuple, list)) and all(
        isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for v in value
    ):
        return tuple(value)
    return parse_allowlist(value)  # type: ignore[arg-type]


def _pinned_connection(base: type[HTTPConnection], address: str) -> type[HTTPConnection]:
    """Returns a connection class that dials ``address`` while keeping Host and SNI unchanged."""

    class PinnedConnection(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            try:
                return urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                raise NewConnectionError(self, f"failed to connect to {address}: {exc}") from exc

    return PinnedConnection


class GuardedAdapter(HTTPAdapter):
    """A transport adapter that checks each request's URL and pins the checked address.

    A pool's connections stay open between requests (a callback to the same platform reuses its
    connection, and its TLS session) while the host's first address is the one the pool was
    pinned to; when the check answers another address, every kept connection is dropped and the
    new pool dials the new one. The check runs before every request either way.
    """

    def __init__(self, allowlist: Sequence[Network] = (), **kwargs: Any) -> None:
        self.allowlist = tuple(allowlist)
        super().__init__(**kwargs)

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        address = check_url(request.url, allowlist=self.allowlist)[0]
        pool: Any = super().get_connection_with_tls_context(request, verify, None, cert)
        pinned_to = getattr(pool.ConnectionCls, "_dfmod_address", None)
        if pinned_to == address:
            return pool
        if pinned_to is not None:  # the name answers elsewhere now: nothing kept may be reused
            self.poolmanager.clear()
            pool = super().get_connection_with_tls_context(request, verify, None, cert)
        pinned = _pinned_connection(pool.ConnectionCls, address)
        pinned._dfmod_address = address  # type: ignore[attr-defined]
        pool.ConnectionCls = pinned
        return pool


def safe_session(*, allowlist: AllowList = ()) -> requests.Session:
    """Returns a session whose every request (and redirect) passes :func:`check_url`.

    Environment proxies are ignored (``trust_env`` off) so they cannot bypass the guard.
    """
    networks = _networks(allowlist)
    session = requests.Session()
    session.trust_env = False
    # One kept connection per host, for the 16 hosts used last (one thread, one request at a time).
    adapter = GuardedAdapter(networks, pool_connections=16, pool_maxsize=1)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
