"""Moving bytes between the client and the tunnel, both directions, one thread each.

Two ways, measured side by side in tools/bench_gateway.py:
- `copy` (default): recv_into a 1 MiB buffer, sendall. Big buffers keep Python's share small;
  the kernel builds fresh linear segments, which proxies that read in small pieces (tinyproxy
  reads 2 KiB at a time) consume fastest.
- `splice`: splice(2) socket -> pipe -> socket; the bytes never enter user space, so the
  forwarder's CPU per GiB is a fraction of `copy`'s, but the page-fragment segments it sends
  slow a small-reads proxy down.
A direction that reaches EOF passes it on as a shutdown of the other socket's write side
(half-close), never as a close of both. Each direction holds at most one buffer (or one pipe):
a slow reader slows the writer (backpressure, no unbounded buffering).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

BUFFER = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MODES = ("copy", "splice") if hasattr(os, "splice") else ("copy",)


@dataclass
class Stats:
    up: int = 0  # client -> target
    down: int = 0  # target -> client
    outcome: str = "closed"
    last: float = field(default_factory=time.monotonic)


def pipe_both(
    client: socket.socket, upstream: socket.socket, idle_s: float, mode: str = "copy", pool: Executor | None = None
) -> Stats:
    """Relay until both directions ended or the connection idled `idle_s` (then both are cut).

    The target-to-client direction runs on `pool` (reused threads cost less to start) or on a
    thread of its own."""
    if mode not in MODES:
        raise ValueError(f"relay mode must be one of {', '.join(MODES)}")
    stats = Stats()
    for s in (client, upstream):
        s.setblocking(True)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    args = (stats, idle_s, mode)
    if pool is not None:
        down = pool.submit(_direction, upstream, client, "down", *args)
        _direction(client, upstream, "up", *args)
        down.result()
    else:
        thread = threading.Thread(target=_direction, args=(upstream, client, "down", *args), daemon=True)
        thread.start()
        _direction(client, upstream, "up", *args)
        thread.join()
    return stats


_pool: list[memoryview] = []
_pool_lock = threading.Lock()
POOL_MAX = 64


def _take() -> memoryview:
    """A 1 MiB buffer: allocating and zeroing one per direction would cost each new connection."""
    with _pool_lock:
        if _pool:
            return _pool.pop()
    return memoryview(bytearray(BUFFER))


def _give(buf: memoryview) -> None:
    with _pool_lock:
        if len(_pool) < POOL_MAX:
            _pool.append(buf)


def _abort(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


def _direction(src: socket.socket, dst: socket.socket, name: str, stats: Stats, idle_s: float, mode: str) -> None:
    poller = select.poll()
    poller.register(src, select.POLLIN | select.POLLHUP | select.POLLERR)
    r = w = -1
    buf = _take() if mode == "copy" else None
    if mode == "splice":
        r, w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, BUFFER)
    try:
        while True:
            if not poller.poll(250):
                if time.monotonic() - stats.last > idle_s:
                    stats.outcome = "idle timeout"
                    _abort(src, dst)
                    return
                continue
            if buf is not None:
                n = src.recv_into(buf)
                dst.sendall(buf[:n])
            else:
                n = os.splice(src.fileno(), w, BUFFER)
                left = n
                while left:
                    left -= os.splice(r, dst.fileno(), left)
            if n == 0:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            stats.last = time.monotonic()
            if name == "up":
                stats.up += n
            else:
                stats.down += n
    except OSError as e:
        if stats.outcome == "closed":
            stats.outcome = "reset" if e.errno in (errno.ECONNRESET, errno.EPIPE) else f"error: {e.strerror}"
        _abort(src, dst)
    finally:
        if buf is not None:
            _give(buf)
        if mode == "splice":
            os.close(r)
            os.close(w)
