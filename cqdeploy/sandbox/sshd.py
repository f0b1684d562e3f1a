"""A real OpenSSH sshd on 127.0.0.1 serving the sandbox, with its own host key and user key.

Used by the tests and by `cqdeploy demo --ssh`. Commands run with the sandbox's own HOME, so
the operator's shell start-up files cost nothing and change nothing.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxError
from .cluster import pid_alive, stop_pid


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/sbin/sshd") if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    root: Path
    port: int = 0
    pid: int = 0

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    @property
    def user_key(self) -> Path:
        return self.root / "user_ed25519"

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def user(self) -> str:
        return getpass.getuser()

    def known_hosts_line(self) -> str:
        kind, blob = self.host_key.with_name("host_ed25519.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def start(self) -> Sshd:
        sshd = find_sshd()
        if sshd is None:
            raise SandboxError("OpenSSH sshd is not installed (Debian: apt-get install openssh-server)")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        home = self.root / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        for key in (self.host_key, self.user_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.root / "authorized_keys").write_text(self.user_key.with_name("user_ed25519.pub").read_text())
        os.chmod(self.root / "authorized_keys", 0o600)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.port = self.port or free_port()
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AllowUsers {self.user}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "UseDNS no",
                    "X11Forwarding no",
                    "AllowTcpForwarding no",
                    "MaxSessions 64",
                    "MaxStartups 64:30:128",
                    "LogLevel VERBOSE",
                    f"SetEnv HOME={home}",
                    "",
                ]
            )
        )
        (self.root / "sshd.pid").unlink(missing_ok=True)
        subprocess.run([sshd, "-f", str(config), "-E", str(self.log)], check=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                self.pid = int((self.root / "sshd.pid").read_text())
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except (OSError, ValueError):
                time.sleep(0.02)
        raise SandboxError(f"sshd did not start on 127.0.0.1:{self.port}; see {self.log}")

    def running(self) -> bool:
        """Whether this sandbox's sshd is up; learns its port and pid from its files."""
        try:
            self.pid = int((self.root / "sshd.pid").read_text())
            for line in (self.root / "sshd_config").read_text().splitlines():
                if line.startswith("Port "):
                    self.port = int(line.split()[1])
        except (OSError, ValueError):
            return False
        return pid_alive(self.pid)

    def stop(self) -> bool:
        return bool(self.running() and stop_pid(self.pid))
