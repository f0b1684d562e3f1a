"""SSH to the target with paramiko: one connection per runner, verified host keys, bounded waits.

Every paramiko, socket and EOF error is translated here into the project's TransportError tree;
nothing from paramiko leaks out of this module.

- Host keys: the provider's known_hosts file is the truth. An unknown host is refused before
  authentication (so before any command) with its key type and SHA256 fingerprint, unless the
  provider says `host_key_policy = "accept-new"` (OpenSSH's StrictHostKeyChecking=accept-new).
  A changed key is always refused.
- Dead links: paramiko's keepalive sends a packet every `keepalive_s`; TCP_USER_TIMEOUT makes the
  kernel drop the connection once such data stays unacknowledged `keepalive_s * keepalive_count`
  seconds, like ServerAliveInterval x ServerAliveCountMax.
- TCP_NODELAY, and an ACK for every segment at once: without them a command pays Nagle plus
  delayed ACK (about 40 ms here), on our side or on sshd's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import select
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from ..errors import CommandTimeout, ConfigError, ConnectError, ConnectionLost, HostKeyError
from .base import Result, Transport

# paramiko's transport thread logs every failure it then raises to us; we report those ourselves,
# so its records must not reach the terminal through logging's last-resort handler.
_log = logging.getLogger("paramiko")
_log.addHandler(logging.NullHandler())
_log.propagate = False


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:…` fingerprint of a host key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_id(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after ~/.ssh/config has been applied."""

    alias: str
    host: str
    port: int
    user: str
    identity_files: tuple[str, ...]


def resolve(provider: Any) -> Endpoint:
    """Apply ~/.ssh/config (HostName, User, Port, IdentityFile) to the provider's settings;
    what the provider says explicitly wins."""
    alias = provider.ssh_host
    found: dict[str, Any] = {}
    config_path = Path(os.path.expanduser(provider.ssh_config)) if provider.ssh_config else None
    if config_path and config_path.exists():
        found = paramiko.SSHConfig.from_path(str(config_path)).lookup(alias)
    host = found.get("hostname", alias)
    port = provider.ssh_port or int(found.get("port", 22))
    user = provider.ssh_user or found.get("user") or os.environ.get("USER", "root")
    identities = provider.identity_files or tuple(os.path.expanduser(p) for p in found.get("identityfile", []))
    return Endpoint(alias, host, port, user, tuple(identities))


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Unknown host: refuse before authenticating, saying exactly how to trust it."""

    def __init__(self, provider_id: str, accept_new: bool, known_hosts: Path) -> None:
        self.provider_id = provider_id
        self.accept_new = accept_new
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.accept_new:
            record_host_key(self.known_hosts, hostname, key)
            return
        raise HostKeyError(
            f"host {hostname} of provider {self.provider_id} is not trusted: {key.get_name()} key "
            f"{fingerprint(key)}; if that is D601's key, run `cqdeploy provider trust {self.provider_id}`"
        )


def record_host_key(known_hosts: Path, hostname: str, key: paramiko.PKey) -> None:
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def scan_host_key(provider: Any, timeout: float = 10.0) -> tuple[str, paramiko.PKey]:
    """Key exchange only, no authentication and no command: what key does the host show?"""
    end = resolve(provider)
    try:
        sock = socket.create_connection((end.host, end.port), timeout=timeout)
        t = paramiko.Transport(sock)
        try:
            t.start_client(timeout=timeout)
            return host_id(end.host, end.port), t.get_remote_server_key()
        finally:
            t.close()
    except (OSError, paramiko.SSHException, EOFError) as e:
        raise ConnectError(f"cannot reach {end.host}:{end.port} for provider {provider.id}: {e}") from e


class _QuickAckSocket(socket.socket):
    """A socket that acknowledges every segment at once.

    sshd leaves Nagle on for non-interactive sessions, and right after authentication it sends a
    message we do not answer: its next small reply (our first channel's confirmation) then waits
    for our delayed ACK, about 40 ms. TCP_QUICKACK does not stick, so it is set after each recv.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if _QUICKACK is not None:
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class SSHTransport(Transport):
    name = "ssh"

    def __init__(self, provider: Any, known_hosts: Path) -> None:
        self.provider = provider
        self.known_hosts = known_hosts
        self.endpoint = resolve(provider)
        self.client: paramiko.SSHClient | None = None
        self.connects = 0

    # -- connection ------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        if self.client is not None and self._active():
            return self.client
        self.close()
        p, end = self.provider, self.endpoint
        client = paramiko.SSHClient()
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(_Refuse(p.id, p.host_key_policy == "accept-new", self.known_hosts))
        try:
            plain = socket.create_connection((end.host, end.port), timeout=p.connect_timeout_s)
            sock = _QuickAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
            sock.settimeout(p.connect_timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                bound_ms = int(p.keepalive_s * p.keepalive_count * 1000)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, bound_ms)
            client.connect(
                end.host,
                port=end.port,
                username=end.user,
                key_filename=list(end.identity_files) or None,
                allow_agent=p.use_agent,
                look_for_keys=False,
                sock=sock,
                timeout=p.connect_timeout_s,
                banner_timeout=p.connect_timeout_s,
                auth_timeout=p.connect_timeout_s,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(
                f"HOST KEY CHANGED for {e.hostname} (provider {p.id}): it now shows {e.key.get_name()} "
                f"{fingerprint(e.key)}, known_hosts has {fingerprint(e.expected_key)}. Refusing; if the "
                f"host was really reinstalled, remove its line from {self.known_hosts} and trust it again"
            ) from e
        except paramiko.AuthenticationException as e:
            client.close()
            raise ConnectError(f"{end.user}@{end.host}:{end.port} refused our keys (provider {p.id})") from e
        except (OSError, paramiko.SSHException, EOFError) as e:
            client.close()
            raise ConnectError(f"cannot connect to {end.host}:{end.port} for provider {p.id}: {e}") from e
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(max(1, int(p.keepalive_s)))
        self.client = client
        self.connects += 1
        return client

    def _active(self) -> bool:
        t = self.client.get_transport() if self.client else None
        return bool(t and t.is_active())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # -- commands ----------------------------------------------------------------

    def run(self, script: str, *, stdin: bytes = b"", timeout: float = 60.0) -> Result:
        """Run `script` with bash on the target; stdout and stderr are drained together."""
        client = self.connect()
        deadline = time.monotonic() + timeout
        try:
            transport = client.get_transport()
            assert transport is not None
            chan = transport.open_session(timeout=min(timeout, self.provider.connect_timeout_s))
            chan.exec_command("bash -c " + shlex.quote(script))
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = [], []
            while True:
                if chan.recv_ready():
                    out.append(chan.recv(1 << 16))
                    continue
                if chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(1 << 16))
                    continue
                # exit-status may arrive before the last data: done only once EOF is in too
                if chan.eof_received and chan.exit_status_ready():
                    break
                if chan.closed or not transport.is_active():
                    if chan.exit_status_ready():
                        break
                    raise ConnectionLost(f"connection to {self.endpoint.host} lost while a command ran")
                left = deadline - time.monotonic()
                if left <= 0:
                    chan.close()
                    raise CommandTimeout(f"remote command did not finish within {timeout:.1f}s")
                if chan.eof_received:  # output is complete; only the exit status is still to come
                    chan.status_event.wait(min(left, 1.0))
                else:
                    select.select([chan], [], [], min(left, 1.0))
            code = chan.recv_exit_status()
            chan.close()
            if code == -1 and not transport.is_active():
                # paramiko marks a channel of a dead connection "exited -1"; that is a lost link
                raise ConnectionLost(f"connection to {self.endpoint.host} lost while a command ran")
        except (CommandTimeout, ConnectionLost):
            raise
        except (OSError, paramiko.SSHException, EOFError) as e:
            self.close()
            raise ConnectionLost(f"connection to {self.endpoint.host} lost: {e}") from e
        return Result(code, b"".join(out), b"".join(err))


def open_ssh(provider: Any, known_hosts: Path) -> SSHTransport:
    if not provider.ssh_host:
        raise ConfigError(f"provider {provider.id}: transport ssh needs host")
    return SSHTransport(provider, known_hosts)
