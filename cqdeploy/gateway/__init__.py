"""The D601 TCP egress gateway: in-cluster TCP to outside services through an HTTP CONNECT proxy.

PostgreSQL and other TCP clients ignore HTTP proxy variables, so pods talk to
`d601-tcp-egress-gateway.unidesk.svc.cluster.local:<port>`, and this gateway opens a CONNECT
tunnel through the provider-gateway egress proxy to the route's real target.
"""

from __future__ import annotations

import os

from .routes import Proxy, Route, parse_proxy, parse_routes
from .server import Gateway, Settings

__all__ = ["Gateway", "Proxy", "Route", "Settings", "parse_proxy", "parse_routes", "proxy_from_env"]


def proxy_from_env(explicit: str | None = None) -> Proxy:
    return parse_proxy(
        explicit
        or os.environ.get("HTTPS_PROXY")
        or os.environ.get("https_proxy")
        or os.environ.get("HTTP_PROXY")
        or os.environ.get("http_proxy")
    )
