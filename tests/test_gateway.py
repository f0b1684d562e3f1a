"""The TCP egress gateway against real peers: tinyproxy, PostgreSQL, and small proxies of our own."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cqdeploy.errors import ConfigError
from cqdeploy.gateway import Gateway, Settings, parse_proxy, parse_routes
from cqdeploy.gateway.handshake import Refused, parse_reply

CI = os.environ.get("CI") == "true"


def need(tool: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if os.path.exists(p)), None)
    if path is None:
        if CI:
            pytest.fail(f"CI=true but {tool} is missing: .ci/run must install it")
        pytest.skip(f"{tool} is not installed")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, limit_s: float = 10) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


# -- peers ------------------------------------------------------------------------


@pytest.fixture
def tinyproxy(tmp_path):
    binary = need("tinyproxy")
    procs = []

    def start(auth: tuple[str, str] | None = None) -> int:
        port = free_port()
        conf = tmp_path / f"tinyproxy-{port}.conf"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 200",
            "Allow 127.0.0.1",
            "LogLevel Warning",
        ]
        if os.geteuid() == 0:
            lines += ["User nobody", "Group nogroup"]
        if auth:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        conf.write_text("\n".join(lines) + "\n")
        procs.append(
            subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        wait_port(port)
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(5)


class _Server:
    """A loopback TCP server handing each connection to `_one` on a thread of its own."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()


class Echo(_Server):
    """A TCP target that echoes, or hashes everything it receives."""

    def __init__(self, mode: str = "echo") -> None:
        super().__init__()
        self.mode = mode
        self.digests: queue.Queue = queue.Queue()
        self.start()

    def _one(self, conn: socket.socket) -> None:
        h, total = hashlib.sha256(), 0
        with conn:
            try:
                while data := conn.recv(1 << 20):
                    if self.mode == "echo":
                        conn.sendall(data)
                    elif self.mode == "reply-after-eof":
                        total += len(data)
                    else:
                        h.update(data)
                        total += len(data)
                if self.mode == "reply-after-eof":
                    conn.sendall(f"got {total} bytes".encode() * 1000)
            except OSError:
                pass
        self.digests.put((h.hexdigest(), total))


class FakeProxy(_Server):
    """A CONNECT proxy of our own: answers as told, records what it was sent, and (mode 'tunnel')
    relays with half-close kept, unlike tinyproxy and squid."""

    def __init__(self, answer: bytes | None = b"HTTP/1.1 200 Connection established\r\n\r\n", target: int = 0):
        super().__init__()
        self.answer = answer
        self.target = target
        self.heads: list[bytes] = []
        self.extra: list[bytes] = []
        self.start()

    def _one(self, conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        self.heads.append(head)
        if self.answer is None:  # never answer
            time.sleep(5)
            conn.close()
            return
        conn.settimeout(0.3)
        with contextlib.suppress(OSError):
            rest += conn.recv(4096)  # would a client byte arrive before our answer?
        self.extra.append(rest)
        conn.settimeout(None)
        conn.sendall(self.answer)
        if not self.answer.startswith(b"HTTP/1.1 200") or not self.target:
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.target))

        def pipe(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := a.recv(65536):
                    b.sendall(data)
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)  # pass the half-close on, keep the other way open

        t = threading.Thread(target=pipe, args=(up, conn), daemon=True)
        t.start()
        pipe(conn, up)
        t.join(10)
        conn.close()
        up.close()


@contextlib.contextmanager
def gateway(routes: str, proxy: str, **kw):
    log = io.StringIO()
    gw = Gateway(Settings(parse_routes(routes), parse_proxy(proxy), listen_host="127.0.0.1", **kw), log=log).start()
    try:
        yield gw, log
    finally:
        gw.shutdown(drain_s=1)


def closed(c: socket.socket) -> bool:
    """The gateway closed us: EOF, or a reset because our early bytes were left unread."""
    try:
        return c.recv(100) == b""
    except ConnectionResetError:
        return True


def log_lines(log: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in log.getvalue().splitlines()]


def wait_log(log: io.StringIO, n: int, limit_s: float = 5) -> list[dict]:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        conns = [x for x in log_lines(log) if x["event"] == "connection"]
        if len(conns) >= n:
            return conns
        time.sleep(0.02)
    raise AssertionError(f"expected {n} connection log lines: {log.getvalue()}")


# -- parsing --------------------------------------------------------------------------


def test_routes_parse_and_bad_entries_are_named():
    routes = parse_routes("15432=db.internal:5432, 4255=relay.internal:4255,9=[::1]:7")
    assert [(r.listen_port, r.host, r.port) for r in routes] == [
        (15432, "db.internal", 5432),
        (4255, "relay.internal", 4255),
        (9, "::1", 7),
    ]
    for bad, message in [
        ("15432=db.internal", "'15432=db.internal': expected"),
        ("x=db:5432", "listen port 'x'"),
        ("1=db:99999", "target port '99999'"),
        ("1=db:1,1=db:2", "port 1 is routed twice"),
        ("1=bad host:1", "not a host name"),
        ("", "is empty"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_routes(bad)


def test_proxy_credentials_become_a_header_and_are_never_shown():
    p = parse_proxy("http://cq:s%40cret@127.0.0.1:3128")
    assert p.authorization == "Basic Y3E6c0BjcmV0"
    assert "cret" not in p.shown and "cret" not in repr(p) and p.shown == "http://***@127.0.0.1:3128"
    with pytest.raises(ConfigError) as info:
        parse_proxy("socks5://cq:hunter2@h:1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "proxy answered 403"),
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "proxy answered 407"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed proxy status line"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000, "over 16384 bytes"),
    ],
    ids=["403", "407", "malformed", "oversized"],
)
def test_reply_heads_that_do_not_open_a_tunnel(reply, reason):
    with pytest.raises(Refused, match=reason):
        parse_reply(reply)


def test_bytes_after_the_reply_head_belong_to_the_target():
    assert parse_reply(b"HTTP/1.1 200 OK\r\n") is None
    reply = parse_reply(b"HTTP/1.0 200 Connection established\r\nA: b\r\n\r\nSERVER-HELLO")
    assert reply is not None and (reply.status, reply.rest) == (200, b"SERVER-HELLO")


# -- through tinyproxy ------------------------------------------------------------------


def test_a_connection_through_tinyproxy_echoes_and_is_logged(tinyproxy):
    echo = Echo()
    port = free_port()
    with gateway(f"{port}=127.0.0.1:{echo.port}", f"http://127.0.0.1:{tinyproxy()}") as (_, log):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"ping")
            assert c.recv(100) == b"ping"
        [line] = wait_log(log, 1)
    assert line["route"] == str(port) and line["target"] == f"127.0.0.1:{echo.port}"
    assert (line["bytes_up"], line["bytes_down"], line["outcome"]) == (4, 4, "ok")
    assert line["duration_s"] > 0
    echo.close()


def test_credentials_reach_the_proxy_as_proxy_authorization_and_never_the_log(tinyproxy):
    echo = Echo()
    port, auth_port = free_port(), tinyproxy(auth=("cq", "pr0xy-pass"))
    with gateway(f"{port}=127.0.0.1:{echo.port}", f"http://cq:pr0xy-pass@127.0.0.1:{auth_port}") as (_, log):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"x")
            assert c.recv(10) == b"x"
        wait_log(log, 1)
    with gateway(f"{port}=127.0.0.1:{echo.port}", f"http://cq:wrong@127.0.0.1:{auth_port}") as (_, log2):
        with socket.create_connection(("127.0.0.1", port)) as c:
            assert c.recv(10) == b""
        [line] = wait_log(log2, 1)
    assert line["reason"] in ("proxy answered 407", "proxy answered 401")  # tinyproxy says 401
    assert "pr0xy-pass" not in log.getvalue() + log2.getvalue() and "wrong" not in log2.getvalue()
    echo.close()


def test_one_gib_through_the_gateway_arrives_intact(tinyproxy):
    sink = Echo(mode="hash")
    port = free_port()
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    with gateway(f"{port}=127.0.0.1:{sink.port}", f"http://127.0.0.1:{tinyproxy()}") as (_, log):
        with socket.create_connection(("127.0.0.1", port)) as c:
            for i in range(1024):
                chunk = i.to_bytes(4, "big") + block[4:]
                sent.update(chunk)
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            digest, total = sink.digests.get(timeout=120)
        [line] = wait_log(log, 1, 30)
    assert total == 1 << 30 and digest == sent.hexdigest()
    assert line["bytes_up"] == 1 << 30
    sink.close()


def test_psql_runs_queries_through_the_gateway(tinyproxy, tmp_path):
    pg_bin = Path("/usr/lib/postgresql")
    versions = sorted(pg_bin.glob("*/bin/postgres")) if pg_bin.exists() else []
    if not versions:
        need("postgres")
    need("psql")
    bindir = versions[-1].parent
    data = Path(tempfile.mkdtemp(prefix="cqpg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    pg_port, port = free_port(), free_port()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data / "db"), "--auth=trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data / "db"),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            f"-p {pg_port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        with gateway(f"{port}=127.0.0.1:{pg_port}", f"http://127.0.0.1:{tinyproxy()}") as (_, log):
            done = subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-At",
                    "-c",
                    "select 6 * 7; create table t (n int); insert into t select generate_series(1, 1000); "
                    "select sum(n) from t;",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.split() == ["42", "CREATE", "TABLE", "INSERT", "0", "1000", "500500"]
            assert wait_log(log, 1)[0]["outcome"] == "ok"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)


# -- failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "proxy answered 403"),
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "proxy answered 407"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "proxy answered 502"),
        (b"garbage\r\n\r\n", "malformed proxy status line"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 40000, "proxy reply head over 16384 bytes"),
        (b"HTTP/1.1 200 Conn", "proxy closed the connection before replying"),
        (None, "proxy timed out"),
    ],
    ids=["403", "407", "502", "malformed", "oversized", "eof", "timeout"],
)
def test_a_proxy_refusal_closes_the_client_within_a_second_and_forwards_nothing(answer, reason):
    proxy = FakeProxy(answer)
    port = free_port()
    with gateway(f"{port}=db.internal:5432", f"http://127.0.0.1:{proxy.port}", connect_timeout_s=1.0) as (_, log):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"early client bytes")
            c.settimeout(5)
            began = time.monotonic()
            assert closed(c)
            waited = time.monotonic() - began
        [line] = wait_log(log, 1)
    assert waited < (2.0 if answer is None else 1.0)
    assert line["outcome"] == "refused" and line["reason"] == reason
    assert proxy.heads[0].startswith(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432")
    assert all(extra == b"" for extra in proxy.extra), "no client byte before the 2xx"
    proxy.close()


def test_half_close_is_passed_on_and_the_whole_reply_still_arrives():
    target = Echo(mode="reply-after-eof")
    proxy = FakeProxy(target=target.port)
    port = free_port()
    with gateway(f"{port}=127.0.0.1:{target.port}", f"http://127.0.0.1:{proxy.port}") as (_, log):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"x" * 100_000)
            c.shutdown(socket.SHUT_WR)
            got = b""
            c.settimeout(10)
            while data := c.recv(65536):
                got += data
        [line] = wait_log(log, 1)
    assert got == b"got 100000 bytes" * 1000
    assert (line["bytes_up"], line["bytes_down"]) == (100_000, len(got))
    proxy.close()
    target.close()


def test_an_unrouted_port_is_refused_and_targets_come_only_from_the_table():
    proxy = FakeProxy(target=Echo().port)
    port = free_port()
    with gateway(f"{port}=127.0.0.1:1", f"http://127.0.0.1:{proxy.port}"):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", free_port()), timeout=2)
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"CONNECT evil.example:22 HTTP/1.1\r\n\r\n")  # just bytes inside the tunnel
            time.sleep(0.3)
    assert all(h.startswith(b"CONNECT 127.0.0.1:1 ") for h in proxy.heads)
    proxy.close()


def test_a_thousand_connections_leave_no_file_descriptor_behind(tinyproxy):
    echo = Echo()
    port = free_port()
    with gateway(f"{port}=127.0.0.1:{echo.port}", f"http://127.0.0.1:{tinyproxy()}") as (gw, log):
        with socket.create_connection(("127.0.0.1", port)) as c:  # warm up threads and pools
            c.sendall(b"w")
            c.recv(1)
        wait_log(log, 1)
        before = len(os.listdir("/proc/self/fd"))
        for i in range(1000):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"%d" % i)
                assert c.recv(16) == b"%d" % i
        wait_log(log, 1001, 30)
        end = time.monotonic() + 5
        while len(gw.active) and time.monotonic() < end:
            time.sleep(0.05)
        after = len(os.listdir("/proc/self/fd"))
    assert after <= before, (before, after)
    echo.close()


def test_idle_connections_are_cut_and_capacity_is_capped(tinyproxy):
    echo = Echo()
    port = free_port()
    with gateway(
        f"{port}=127.0.0.1:{echo.port}", f"http://127.0.0.1:{tinyproxy()}", idle_timeout_s=1.0, max_connections=1
    ) as (_, log):
        first = socket.create_connection(("127.0.0.1", port))
        first.sendall(b"a")
        assert first.recv(1) == b"a"
        with socket.create_connection(("127.0.0.1", port)) as second:
            second.settimeout(3)
            assert second.recv(1) == b""
        first.settimeout(5)
        assert first.recv(1) == b""  # cut after a second idle
        first.close()
        lines = wait_log(log, 2)
    assert {x.get("reason") or x["outcome"] for x in lines} == {"over capacity", "idle timeout"}
    echo.close()


def test_sigterm_drains_open_connections_and_readiness_follows(tinyproxy, tmp_path):
    echo = Echo()
    port, health = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cqdeploy.gateway",
            "--routes",
            f"{port}=127.0.0.1:{echo.port}",
            "--listen",
            "127.0.0.1",
            "--health-port",
            str(health),
            "--drain-s",
            "2",
        ],
        env={**os.environ, "HTTPS_PROXY": f"http://127.0.0.1:{tinyproxy()}"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port)
        import httpx

        assert httpx.get(f"http://127.0.0.1:{health}/ready").status_code == 200
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"1")
        assert c.recv(1) == b"1"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        c.sendall(b"2")
        assert c.recv(1) == b"2"  # still served while draining
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1)
        began = time.monotonic()
        assert proc.wait(10) == 0
        assert time.monotonic() - began < 4
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    with proc.stderr:
        events = [json.loads(x)["event"] for x in proc.stderr.read().splitlines()]
    assert events[0] == "ready" and events[-1] == "stopped"
    echo.close()


def test_the_sample_manifest_carries_the_gateway_and_its_routes():
    import yaml

    from cqdeploy.sandbox import APP

    docs = list(
        yaml.safe_load_all((APP / "src/components/microservices/v3sctl-adapter/v3s/code-queue.k8s.yaml").read_text())
    )
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "d601-tcp-egress-gateway"
    )
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "d601-tcp-egress-gateway")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert [r.listen_port for r in parse_routes(env["TCP_EGRESS_ROUTES"])] == [15432, 4255]
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [4255, 15432]
