"""TCP_EGRESS_ROUTES and the proxy URL, parsed and validated; pure.

    TCP_EGRESS_ROUTES="15432=db.internal:5432,4255=relay.internal:4255"

Each entry is `<listen port>=<target host>:<target port>`; the target host may be a name, an
IPv4 address or a bracketed IPv6 address. A new TCP dependency only adds an entry.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


@dataclass(frozen=True)
class Route:
    listen_port: int
    host: str
    port: int

    @property
    def name(self) -> str:
        return str(self.listen_port)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def _port(text: str, entry: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"TCP_EGRESS_ROUTES entry {entry!r}: {what} {text!r} is not a port (1-65535)")
    return int(text)


def parse_routes(spec: str) -> list[Route]:
    """Every route of the spec; a bad or duplicate entry is refused naming it."""
    routes: list[Route] = []
    seen: set[int] = set()
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        listen, eq, target = entry.partition("=")
        host, colon, port = target.rpartition(":")
        if not eq or not colon or not host:
            raise ConfigError(f"TCP_EGRESS_ROUTES entry {entry!r}: expected <listen port>=<host>:<port>")
        if not _HOST.match(host):
            raise ConfigError(f"TCP_EGRESS_ROUTES entry {entry!r}: {host!r} is not a host name or address")
        route = Route(_port(listen.strip(), entry, "listen port"), host.strip("[]"), _port(port, entry, "target port"))
        if route.listen_port in seen:
            raise ConfigError(f"TCP_EGRESS_ROUTES entry {entry!r}: port {route.listen_port} is routed twice")
        seen.add(route.listen_port)
        routes.append(route)
    if not routes:
        raise ConfigError("TCP_EGRESS_ROUTES is empty: give at least one <listen port>=<host>:<port>")
    return routes


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # the Proxy-Authorization value; never logged

    @property
    def shown(self) -> str:
        """How logs and errors name the proxy: credentials never appear."""
        return f"http://{'***@' if self.authorization else ''}{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Proxy({self.shown})"


def parse_proxy(url: str | None) -> Proxy:
    if not url:
        raise ConfigError("no egress proxy: pass --proxy or set HTTPS_PROXY (or HTTP_PROXY)")
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname:
        # never echo the URL: it may hold credentials
        raise ConfigError("the egress proxy must be an http:// URL with a host (HTTP CONNECT)")
    try:
        port = parts.port or 80
    except ValueError as e:
        raise ConfigError("the egress proxy URL has an invalid port") from e
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(pair).decode()
    return Proxy(parts.hostname, port, auth)
