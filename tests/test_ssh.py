"""The SSH transport against a real OpenSSH sshd that the suite starts on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import cqdeploy, start, wait_done, wait_until

from cqdeploy.config import load_config
from cqdeploy.errors import HostKeyError
from cqdeploy.render import parse_ts
from cqdeploy.sandbox.sshd import find_sshd
from cqdeploy.transport.ssh import SSHTransport, resolve

pytestmark = pytest.mark.skipif(
    find_sshd() is None and os.environ.get("CI") != "true", reason="OpenSSH sshd is not installed"
)


@pytest.fixture
def ssh_box(ws, sandbox):
    if find_sshd() is None:
        pytest.fail("CI=true but sshd is missing: .ci/run must install openssh-server")
    sandbox.up(ssh=True)
    return sandbox


def provider(ws):
    return load_config(ws.config_path)["D601"]


def sshd_log(box) -> str:
    return box.sshd.log.read_text()


def journal_shape(ws, job: str) -> list[tuple]:
    with ws.journal() as j:
        return [
            (e.type, e.data.get("step"), e.data.get("exit_code"))
            for e in j.read(job)
            if e.type not in ("runner.heartbeat",)
        ]


def test_a_deploy_over_ssh_matches_the_local_journal_step_for_step(ws, ssh_box):
    sessions = sshd_log(ssh_box).count("Starting session")
    over_ssh = start("codex", "deploy", ssh_box.head())["jobId"]
    assert wait_done(ws, over_ssh).state.value == "succeeded"
    assert sshd_log(ssh_box).count("Starting session") - sessions >= 14  # launch + wait per step, at least
    ssh_box.configure(ssh=False)
    local = start("codex", "deploy", ssh_box.head())["jobId"]
    assert wait_done(ws, local).state.value == "succeeded"
    assert journal_shape(ws, over_ssh) == journal_shape(ws, local)


def test_one_connection_serves_every_command_of_a_runner(ws, ssh_box):
    accepted = sshd_log(ssh_box).count("Accepted publickey")
    job = start("codex", "deploy", ssh_box.head())["jobId"]
    assert wait_done(ws, job).state.value == "succeeded"
    assert sshd_log(ssh_box).count("Accepted publickey") - accepted == 1


def test_an_unknown_host_is_refused_with_its_fingerprint_and_nothing_runs(ws, ssh_box):
    (ws.home / "known_hosts").unlink()
    accepted = sshd_log(ssh_box).count("Accepted publickey")
    job = start("codex", "deploy", ssh_box.head())["jobId"]
    view = wait_done(ws, job)
    assert view.state.value == "failed"
    assert re.search(r"is not trusted: ssh-ed25519 key SHA256:[A-Za-z0-9+/]{43}", view.data["error"])
    assert "cqdeploy provider trust D601" in view.data["error"]
    assert sshd_log(ssh_box).count("Accepted publickey") == accepted  # never authenticated
    assert not list((ssh_box.target / "tmp").glob(f"unidesk-deploy-{job}-*"))
    assert ssh_box.counters() == {}
    trusted = cqdeploy("provider", "trust", "D601", "--yes")
    assert trusted.returncode == 0 and "recorded in" in trusted.stdout
    again = start("codex", "deploy", ssh_box.head())["jobId"]
    assert wait_done(ws, again).state.value == "succeeded"


def test_a_changed_host_key_is_refused_loudly(ws, ssh_box, tmp_path):
    other = tmp_path / "other"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    (ws.home / "known_hosts").write_text(f"[127.0.0.1]:{ssh_box.sshd.port} {kind} {blob}\n")
    accepted = sshd_log(ssh_box).count("Accepted publickey")
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        SSHTransport(provider(ws), ws.home / "known_hosts").run("touch /tmp/never")
    assert sshd_log(ssh_box).count("Accepted publickey") == accepted
    refused = cqdeploy("provider", "trust", "D601", "--yes")
    assert refused.returncode == 6 and "HOST KEY CHANGED" in refused.stderr


def test_big_output_on_both_streams_does_not_deadlock(ws, ssh_box):
    t = SSHTransport(provider(ws), ws.home / "known_hosts")
    try:
        result = t.run("head -c 10000000 /dev/zero >&2; head -c 52428800 /dev/zero; exit 3", timeout=120)
    finally:
        t.close()
    assert (len(result.stdout), len(result.stderr), result.exit_code) == (52428800, 10000000, 3)


def test_stdin_reaches_the_command_and_is_closed(ws, ssh_box):
    t = SSHTransport(provider(ws), ws.home / "known_hosts")
    try:
        assert t.run("cat; echo done", stdin=b"abc\n", timeout=10).stdout == b"abc\ndone\n"
        assert t.run("cat; echo eof", timeout=10).stdout == b"eof\n"
    finally:
        t.close()


def test_ssh_config_supplies_hostname_user_port_and_identity(ws, ssh_box, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host d601\n  HostName 127.0.0.1\n  Port {ssh_box.sshd.port}\n  User {ssh_box.sshd.user}\n"
        f"  IdentityFile {ssh_box.sshd.user_key}\n"
    )
    from dataclasses import replace

    p = replace(provider(ws), ssh_host="d601", ssh_port=None, ssh_user=None, identity_files=(), ssh_config=str(config))
    end = resolve(p)
    assert (end.host, end.port, end.user, end.identity_files) == (
        "127.0.0.1",
        ssh_box.sshd.port,
        ssh_box.sshd.user,
        (str(ssh_box.sshd.user_key),),
    )
    t = SSHTransport(p, ws.home / "known_hosts")
    try:
        assert t.run("echo $HOME", timeout=10).text.strip().endswith("/ssh/home")
    finally:
        t.close()


class Relay:
    """A TCP relay inside the test that can drop every connection through it at once."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.pairs.append((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        return len(pairs)

    def close(self) -> None:
        self.server.close()
        self.cut()


def test_the_link_cut_mid_build_reconnects_and_the_build_runs_once(ws, ssh_box):
    relay = Relay(ssh_box.sshd.port)
    try:
        line = ssh_box.sshd.known_hosts_line().replace(f":{ssh_box.sshd.port} ", f":{relay.port} ")
        (ws.home / "known_hosts").write_text(line)
        config = ws.config_path.read_text().replace(f"port = {ssh_box.sshd.port}", f"port = {relay.port}")
        ws.config_path.write_text(config)
        ssh_box.set_fault("sleep.build", 2)
        job = start("codex", "deploy", ssh_box.head())["jobId"]
        wait_until(ws, job, lambda v: v.step("build")["remoteLog"] is not None)
        time.sleep(0.5)
        assert relay.cut() >= 1
        view = wait_done(ws, job)
        assert view.state.value == "succeeded", view.data["error"]
        assert ssh_box.counters()["docker build"] == 1 and view.step("build")["attempt"] == 1
        assert relay.accepted >= 2  # it connected again
        assert "transport.reconnecting" in ws.runner_log(job).read_text()
    finally:
        relay.close()


def test_runner_killed_mid_step_over_ssh_reattaches(ws, ssh_box):
    ssh_box.set_fault("sleep.import", 1.5)
    job = start("codex", "deploy", ssh_box.head())["jobId"]
    view = wait_until(ws, job, lambda v: v.step("import")["remoteLog"] is not None)
    os.kill(view.data["runner"]["pid"], signal.SIGKILL)
    assert cqdeploy("job", "resume", job).returncode == 0
    view = wait_done(ws, job)
    assert view.state.value == "succeeded" and view.step("import")["attempt"] == 1
    assert ssh_box.counters()["ctr import"] == 1


def test_a_step_past_the_deadline_over_ssh_fails_at_the_deadline(ws, ssh_box):
    ssh_box.set_fault("sleep.apply", 600)
    job = start("codex", "deploy", ssh_box.head(), "--timeout-ms", "8000")["jobId"]
    view = wait_done(ws, job, timeout=30)
    took = (parse_ts(view.data["endedAt"]) - parse_ts(view.data["createdAt"])).total_seconds()
    assert view.state.value == "timed_out" and view.data["failedStep"] == "apply"
    assert 7.2 <= took <= 8.8, took


def test_status_reads_the_journaled_tail_while_the_host_is_down(ws, ssh_box):
    ssh_box.set_fault("build_fail", True)
    job = start("codex", "deploy", ssh_box.head())["jobId"]
    assert wait_done(ws, job).state.value == "failed"
    ssh_box.sshd.stop()
    done = cqdeploy("job", "status", job, "--tail-bytes", "2000")
    assert done.returncode == 0 and "failed to solve" in done.stdout


def test_no_permissive_host_key_policy_outside_tests():
    source = Path(__file__).parents[1] / "cqdeploy"
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert "AutoAddPolicy" not in text and "WarningPolicy" not in text, path
