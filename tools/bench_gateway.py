"""The egress gateway against `socat TCP-LISTEN:…,fork PROXY:…` over the same tinyproxy, and a
direct connection, side by side in one run: throughput, forwarder CPU seconds per GiB, and
connection-setup latency (connect, one byte there and back).

Goals: throughput >= 1.0x socat's; forwarder CPU per GiB <= half of socat's; setup latency
<= 1.0x socat's. Needs tinyproxy and socat (Debian packages; `tools/dev bench` installs them).
Run: python tools/bench_gateway.py [--gib N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import PY, table

CONNECTIONS = 200
BLOCK = memoryview(os.urandom(1 << 20))
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


def cpu_s(pid: int) -> float:
    """User+system CPU of a process and of its reaped children (socat's forks), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


class Sink:
    """Counts what arrives; echoes the first byte of each connection for the latency probe."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.server.getsockname()[1]
        self.done: dict[int, threading.Event] = {}
        self.received = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        buf = bytearray(1 << 20)
        total = 0
        with conn:
            first = conn.recv(1)
            if first == b"?":
                conn.sendall(b"!")
                return
            total = len(first)
            while n := conn.recv_into(buf):
                total += n
        self.received = total
        self.finished.set()

    finished = threading.Event()


def throughput(port: int, nbytes: int, sink: Sink) -> float:
    sink.finished.clear()
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sent = 0
        while sent < nbytes:
            c.sendall(BLOCK)
            sent += len(BLOCK)
        c.shutdown(socket.SHUT_WR)
        sink.finished.wait(120)
    elapsed = time.perf_counter() - began
    if sink.received != nbytes:
        raise SystemExit(f"sink got {sink.received} of {nbytes} bytes")
    return nbytes / elapsed


def setup_ms(port: int) -> float:
    samples = []
    for _ in range(CONNECTIONS):
        began = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.sendall(b"?")
            if c.recv(1) != b"!":
                raise SystemExit("latency probe got no answer")
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    nbytes = int(args.gib * (1 << 30)) // len(BLOCK) * len(BLOCK)
    for tool in ("tinyproxy", "socat"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    work = Path(tempfile.mkdtemp(prefix="cqgw-"))
    tp_port, socat_port, gw_port = free_port(), free_port(), free_port()
    conf = work / "tinyproxy.conf"
    lines = [f"Port {tp_port}", "Listen 127.0.0.1", "MaxClients 400", "Allow 127.0.0.1", "LogLevel Warning"]
    if os.geteuid() == 0:
        lines += ["User nobody", "Group nogroup"]
    conf.write_text("\n".join(lines) + "\n")
    sink = Sink()
    procs = [
        subprocess.Popen(
            [shutil.which("tinyproxy") or "/usr/sbin/tinyproxy", "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    wait_port(tp_port)
    socat = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{socat_port},fork,reuseaddr,bind=127.0.0.1",
            f"PROXY:127.0.0.1:127.0.0.1:{sink.port},proxyport={tp_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gw_splice_port = free_port()
    gateways = {}
    for mode, port in (("copy", gw_port), ("splice", gw_splice_port)):
        gateways[mode] = subprocess.Popen(
            [PY, "-m", "cqdeploy.gateway", "--routes", f"{port}=127.0.0.1:{sink.port}", "--proxy",
             f"http://127.0.0.1:{tp_port}", "--listen", "127.0.0.1", "--health-port", "0", "--relay", mode],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    procs += [socat, *gateways.values()]
    try:
        wait_port(socat_port)
        wait_port(gw_port)
        wait_port(gw_splice_port)
        rows = []
        results = {}
        for label, port, proc in (
            ("direct", sink.port, None),
            ("socat PROXY", socat_port, socat),
            ("cqdeploy egress-gateway (copy)", gw_port, gateways["copy"]),
            ("cqdeploy egress-gateway --relay splice", gw_splice_port, gateways["splice"]),
        ):
            setup = setup_ms(port)
            before = cpu_s(proc.pid) if proc else 0.0
            rate = throughput(port, nbytes, sink)
            time.sleep(0.3)  # let socat reap its child so its CPU is counted
            cpu = (cpu_s(proc.pid) - before) / (nbytes / (1 << 30)) if proc else 0.0
            results[label] = (rate, cpu, setup)
            rows.append([label, rate / 1e6, f"{cpu:.2f}" if proc else "-", f"{setup:.2f}"])
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    table(
        f"{nbytes / (1 << 30):.2f} GiB one way, {CONNECTIONS} setups each, same tinyproxy, same run",
        ["path", "MB/s", "forwarder CPU-s per GiB", "setup ms (median)"],
        rows,
    )
    g, s = results["cqdeploy egress-gateway (copy)"], results["socat PROXY"]
    print(f"\n  throughput gateway/socat: {g[0] / s[0]:.2f} (goal >= 1.0)")
    print(f"  CPU per GiB gateway/socat: {g[1] / s[1]:.2f} (goal <= 0.5)")
    print(f"  setup latency gateway/socat: {g[2] / s[2]:.2f} (goal <= 1.0)")
    sp = results["cqdeploy egress-gateway --relay splice"]
    print(f"  --relay splice: throughput {sp[0] / s[0]:.2f}x socat, CPU per GiB {sp[1] / s[1]:.2f}x socat")


if __name__ == "__main__":
    main()
