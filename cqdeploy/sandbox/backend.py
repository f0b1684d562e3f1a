"""backend-core's microservice proxy, simulated for the sandbox.

`GET /api/microservices/<service>/proxy/<path>` is forwarded to the pod the cluster routes
the service to, exactly as backend-core forwards to the real Code Queue Service.
Run: `python -m cqdeploy.sandbox.backend TARGET PORT_FILE [PORT]`.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .cluster import Cluster

ROUTE = re.compile(r"^/api/microservices/([a-z0-9-]+)/proxy(/.*)?$")


def make_handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                return self.reply(200, b'{"ok":true,"role":"sandbox backend-core"}')
            m = ROUTE.match(self.path)
            if not m:
                return self.reply(404, b'{"error":"no such route"}')
            service, rest = m.group(1), m.group(2) or "/"
            pod = cluster.answering_pod("unidesk", service)
            if pod is None:
                return self.reply(502, b'{"error":"no running pod for service"}')
            try:
                conn = http.client.HTTPConnection("127.0.0.1", pod["port"], timeout=5)
                conn.request("GET", rest)
                answer = conn.getresponse()
                body = answer.read()
                conn.close()
            except OSError as e:
                return self.reply(502, f'{{"error":"pod unreachable: {type(e).__name__}"}}'.encode())
            self.reply(answer.status, body)

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    cluster = Cluster(Path(args[0]))
    port_file = Path(args[1])
    port = int(args[2]) if len(args) > 2 else 0
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(cluster))
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(cluster))
    server.daemon_threads = True
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(f"{server.server_address[1]} {os.getpid()}\n")
    os.replace(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
