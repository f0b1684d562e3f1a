"""The TCP egress gateway: one listener per route, each connection tunnelled by HTTP CONNECT.

A connection is answered only by its route's fixed target (never by anything the client says),
so the gateway is not an open relay. No client byte is forwarded before the proxy's 2xx; any
other answer, a malformed or oversized reply head, EOF or a timeout closes the client at once.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO

from ..errors import ConfigError
from .handshake import Refused, connect_request, parse_reply
from .relay import pipe_both
from .routes import Proxy, Route


@dataclass(frozen=True)
class Settings:
    routes: list[Route]
    proxy: Proxy
    listen_host: str = "0.0.0.0"
    connect_timeout_s: float = 5.0
    idle_timeout_s: float = 600.0
    max_connections: int = 512
    drain_s: float = 10.0
    health_port: int | None = None
    relay: str = "copy"


class Gateway:
    def __init__(self, settings: Settings, log: TextIO | None = None) -> None:
        self.settings = settings
        self.log = log or sys.stderr
        self.stop = threading.Event()
        self.listeners: dict[str, socket.socket] = {}
        self.active: set[int] = set()
        self.lock = threading.Lock()
        self.health: ThreadingHTTPServer | None = None
        self.threads: list[threading.Thread] = []
        self._open_sockets: set[socket.socket] = set()
        self._resolved: tuple[int, tuple] | None = None
        # two threads per connection (one per direction), reused: starting threads costs setup time
        self.pool = ThreadPoolExecutor(max_workers=2 * settings.max_connections + 2, thread_name_prefix="gw")
        self.served = 0

    # -- life cycle --------------------------------------------------------------

    def start(self) -> Gateway:
        s = self.settings
        for route in s.routes:
            try:
                sock = socket.create_server((s.listen_host, route.listen_port), backlog=128, reuse_port=False)
            except OSError as e:
                self.close_listeners()
                raise ConfigError(
                    f"route {route.name}: cannot listen on {s.listen_host}:{route.listen_port}: {e}"
                ) from e
            sock.settimeout(0.25)
            self.listeners[route.name] = sock
            t = threading.Thread(target=self._accept, args=(route, sock), daemon=True, name=f"accept-{route.name}")
            t.start()
            self.threads.append(t)
        if s.health_port is not None:
            self.health = ThreadingHTTPServer((s.listen_host, s.health_port), _health_handler(self))
            self.health.daemon_threads = True
            threading.Thread(target=self.health.serve_forever, daemon=True).start()
        self._emit(
            {"event": "ready", "routes": [f"{r.listen_port}->{r.target}" for r in s.routes], "proxy": s.proxy.shown}
        )
        return self

    def ready(self) -> bool:
        return bool(self.listeners) and not self.stop.is_set()

    def close_listeners(self) -> None:
        for sock in self.listeners.values():
            sock.close()
        self.listeners.clear()

    def shutdown(self, drain_s: float | None = None) -> int:
        """Stop accepting, let open connections finish for `drain_s`, then cut the rest."""
        self.stop.set()
        self.close_listeners()
        for t in self.threads:  # an accept() in flight keeps its port bound until it returns
            t.join(1)
        end = time.monotonic() + (self.settings.drain_s if drain_s is None else drain_s)
        while time.monotonic() < end:
            with self.lock:
                if not self.active:
                    break
            time.sleep(0.05)
        with self.lock:
            left = len(self.active)
            still_open = list(self._open_sockets)
        for sock in still_open:  # past the drain deadline: cut what is left
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.health:
            self.health.shutdown()
            self.health.server_close()
        self._emit({"event": "stopped", "cut": left})
        return left

    def serve_until_signal(self) -> None:
        got = threading.Event()

        def on_term(signum: int, frame: object) -> None:
            got.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        while not got.wait(0.5):
            pass
        self.shutdown()

    # -- connections ---------------------------------------------------------------

    def _accept(self, route: Route, listener: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                client, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                full = len(self.active) >= self.settings.max_connections
            if full:
                self._emit(
                    {
                        "event": "connection",
                        "route": route.name,
                        "target": route.target,
                        "client": f"{peer[0]}:{peer[1]}",
                        "outcome": "refused",
                        "reason": "over capacity",
                        "bytes_up": 0,
                        "bytes_down": 0,
                        "duration_s": 0.0,
                    }
                )
                client.close()
                continue
            with self.lock:
                self.served += 1
                ticket = self.served
                self.active.add(ticket)
            self.pool.submit(self._serve, route, client, peer, ticket)

    def _serve(self, route: Route, client: socket.socket, peer: tuple, ticket: int) -> None:
        began = time.monotonic()
        record = {
            "event": "connection",
            "route": route.name,
            "target": route.target,
            "client": f"{peer[0]}:{peer[1]}",
            "bytes_up": 0,
            "bytes_down": 0,
        }
        upstream: socket.socket | None = None
        try:
            upstream, rest = self._open_tunnel(route)
            with self.lock:
                self._open_sockets.update((client, upstream))
            if rest:
                client.sendall(rest)
            stats = pipe_both(client, upstream, self.settings.idle_timeout_s, self.settings.relay, self.pool)
            record.update(
                outcome=stats.outcome if stats.outcome != "closed" else "ok",
                bytes_up=stats.up,
                bytes_down=stats.down + len(rest),
            )
        except Refused as e:
            record.update(outcome="refused", reason=str(e))
        except TimeoutError:
            record.update(outcome="refused", reason="proxy timed out")
        except OSError as e:
            record.update(outcome="refused", reason=f"proxy unreachable: {e.strerror or e}")
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            with self.lock:
                self._open_sockets.discard(client)
                if upstream is not None:
                    self._open_sockets.discard(upstream)
                self.active.discard(ticket)
            record["duration_s"] = round(time.monotonic() - began, 4)
            self._emit(record)

    def _open_tunnel(self, route: Route) -> tuple[socket.socket, bytes]:
        s = self.settings
        deadline = time.monotonic() + s.connect_timeout_s
        family, address = self._proxy_address()
        upstream = socket.socket(family, socket.SOCK_STREAM)
        upstream.settimeout(s.connect_timeout_s)
        try:
            upstream.connect(address)
        except OSError:
            upstream.close()
            self._resolved = None  # the proxy may have moved: look it up again next time
            raise
        try:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.sendall(connect_request(route, s.proxy))
            buffer = b""
            while (reply := parse_reply(buffer)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                upstream.settimeout(left)
                chunk = upstream.recv(4096)
                if not chunk:
                    raise Refused("proxy closed the connection before replying")
                buffer += chunk
            return upstream, reply.rest
        except BaseException:
            upstream.close()
            raise

    def _proxy_address(self) -> tuple[int, tuple]:
        """The proxy's address, looked up once (a lookup per connection costs setup latency)."""
        if self._resolved is None:
            p = self.settings.proxy
            family, _, _, _, address = socket.getaddrinfo(p.host, p.port, type=socket.SOCK_STREAM)[0]
            self._resolved = (family, address)
        return self._resolved

    def _emit(self, record: dict) -> None:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
        line = json.dumps(record, sort_keys=False)
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()


def _health_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/healthz" or (self.path == "/ready" and gateway.ready())
            body = b"ok\n" if ok else b"not ready\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Health
