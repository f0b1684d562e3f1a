"""Sample Code Queue service for the cqdeploy sandbox.

Answers /health with the commit pinned in its environment, the way the real service does.
Started by the sandbox's simulated kubelet as a real loopback HTTP process.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[sys.argv.index("--role") + 1] if "--role" in sys.argv else "code-queue"
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")) as f:
    VERSION = f.read().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/ready"):
            body = {
                "ok": True,
                "service": ROLE,
                "version": VERSION,
                "pod": os.environ.get("POD_NAME"),
                "deploy": {
                    "commit": os.environ.get("CODE_QUEUE_DEPLOY_COMMIT"),
                    "requestedCommit": os.environ.get("CODE_QUEUE_DEPLOY_REQUESTED_COMMIT"),
                },
            }
            self.reply(200, body)
        elif path == "/api/tasks/overview" and ROLE == "code-queue":
            self.reply(200, {"tasks": [], "afterSeq": 0, "version": VERSION})
        else:
            self.reply(404, {"error": "not found", "path": path})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file = os.environ.get("SANDBOX_PORT_FILE")
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
