"""The HTTP CONNECT handshake as data: the request bytes, and a bounded parse of the reply."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .routes import Proxy, Route

MAX_HEAD = 16 * 1024
_STATUS = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?$")


def connect_request(route: Route, proxy: Proxy) -> bytes:
    authority = f"[{route.host}]:{route.port}" if ":" in route.host else route.target
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class Refused(Exception):
    """The proxy did not open the tunnel; the message is the logged reason."""


@dataclass(frozen=True)
class Reply:
    status: int
    rest: bytes  # bytes after the head: already the target's, to be forwarded


def parse_reply(buffer: bytes) -> Reply | None:
    """None while the head is incomplete; Refused for anything but a well-formed 2xx."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise Refused(f"proxy reply head over {MAX_HEAD} bytes")
        return None
    if end > MAX_HEAD:
        raise Refused(f"proxy reply head over {MAX_HEAD} bytes")
    status_line = buffer[: buffer.find(b"\r\n")]
    m = _STATUS.match(status_line)
    if not m:
        raise Refused("malformed proxy status line")
    status = int(m.group(1))
    if not 200 <= status < 300:
        raise Refused(f"proxy answered {status}")
    return Reply(status, buffer[end + 4 :])
