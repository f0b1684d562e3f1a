"""The embedded sandbox: a directory that plays host D601 for the demo and the tests.

What is real: git (a bare remote and the deploy cache), rsync, bash, the detached steps, the
pod processes and every HTTP hop. What is SIMULATED: Docker, containerd and k3s, by the shims
in `shims.py` over the state kept by `cluster.py`, and backend-core by `backend.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import SandboxError
from ..process import spawn_detached
from ..workspace import Workspace, write_private
from .cluster import Cluster, pid_alive, stop_pid
from .sshd import Sshd

APP = Path(__file__).parent / "app"
MARKER = "# managed by `cqdeploy demo`: D601 is the embedded sandbox (Docker and k3s SIMULATED)"
SECRET_PROXY = "http://cq-build:sandbox-proxy-secret@127.0.0.1:3128"
FAULTS = ("build_fail", "save_fail", "rollout_hang", "old_pod_answers")
GIT_ID = ["-c", "user.name=cqdeploy sandbox", "-c", "user.email=sandbox@cqdeploy.invalid"]


class Sandbox:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.root = ws.sandbox_dir
        self.target = self.root / "d601"
        self.remote = self.root / "remote.git"
        self.work = self.root / "work"
        self.cluster = Cluster(self.target)
        self.backend_file = self.root / "backend.port"
        self.sshd = Sshd(self.root / "ssh")

    # -- life cycle -----------------------------------------------------------

    def exists(self) -> bool:
        return (self.remote / "HEAD").exists() and (self.target / "bin" / "docker").exists()

    def create(self) -> bool:
        """Build the sandbox once; True if it was created now."""
        if self.exists():
            return False
        self.ws.ensure()
        for d in ("bin", "tmp", "state", "home/ubuntu"):
            (self.target / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        pkg_parent = Path(__file__).resolve().parents[2]
        for tool in ("docker", "kubectl", "ctr"):
            shim = self.target / "bin" / tool
            shim.write_text(
                "#!/bin/sh\n# SIMULATED by the cqdeploy sandbox\n"
                f"PYTHONPATH={shlex.quote(str(pkg_parent))}${{PYTHONPATH:+:$PYTHONPATH}} "
                f"exec {shlex.quote(sys.executable)} -m cqdeploy.sandbox.shims "
                f'{shlex.quote(str(self.target))} {tool} "$@"\n'
            )
            shim.chmod(0o700)
        shutil.rmtree(self.work, ignore_errors=True)
        self._git("init", "--bare", "--quiet", "--initial-branch=main", str(self.remote))
        shutil.copytree(APP, self.work, ignore=shutil.ignore_patterns("__pycache__"))
        self._git("init", "--quiet", "--initial-branch=main", str(self.work))
        self._git("-C", str(self.work), "remote", "add", "origin", str(self.remote))
        self.commit("Code Queue sample app")
        return True

    def configure(self, ssh: bool = False) -> None:
        """Point provider D601 and the manifest at the sandbox (only if cqdeploy owns them).

        With `ssh`, D601 is reached through the sandbox's own sshd, whose host key is recorded
        in the workspace's known_hosts as if the operator had trusted it.
        """
        config = self.ws.config_path
        if config.exists() and MARKER not in config.read_text():
            raise SandboxError(
                f"{config} is yours, not the sandbox's; run the demo in another workspace, "
                "e.g. CQDEPLOY_HOME=/tmp/cq-demo cqdeploy demo"
            )
        port = self.backend()[0]
        t = self.target
        write_private(
            config,
            "\n".join(
                [
                    MARKER,
                    "[providers.D601]",
                    'transport = "local"',
                    f"deploy_dir = {_toml(str(t / 'home/ubuntu/cq-deploy'))}",
                    f"cache_dir = {_toml(str(t / 'home/ubuntu/.cache/cqdeploy/code-queue.git'))}",
                    f"tmp_dir = {_toml(str(t / 'tmp'))}",
                    f"path_prepend = [{_toml(str(t / 'bin'))}]",
                    f'backend_url = "http://127.0.0.1:{port}"',
                    f"build_proxy = {_toml(SECRET_PROXY)}",
                    *(self._ssh_lines() if ssh else []),
                    "",
                ]
            ).replace('transport = "local"', 'transport = "ssh"' if ssh else 'transport = "local"'),
        )
        manifest = self.ws.manifest_path
        if not manifest.exists() or MARKER in manifest.read_text():
            write_private(
                manifest,
                "\n".join(
                    [
                        MARKER,
                        "[services.code-queue]",
                        f"repo = {_toml(str(self.remote))}",
                        'branch = "main"',
                        'provider = "D601"',
                        "",
                    ]
                ),
            )

    def up(self, ssh: bool = False) -> int:
        """Create if needed, start backend-core (and sshd), write the config; returns the backend port."""
        self.create()
        port = self.start_backend()
        if ssh and not self.sshd.running():
            self.sshd.start()
        self.configure(ssh=ssh)
        return port

    def _ssh_lines(self) -> list[str]:
        known = self.ws.home / "known_hosts"
        write_private(known, self.sshd.known_hosts_line())
        return [
            'host = "127.0.0.1"',
            f"port = {self.sshd.port}",
            f"user = {_toml(self.sshd.user)}",
            f"identity_files = [{_toml(str(self.sshd.user_key))}]",
            "use_agent = false",
            'ssh_config = ""',
            'known_hosts = "known_hosts"',
        ]

    def backend(self) -> tuple[int, int]:
        """(port, pid) of the running backend simulator; (0, 0) if none."""
        try:
            port, pid = (int(x) for x in self.backend_file.read_text().split())
        except (OSError, ValueError):
            return 0, 0
        return (port, pid) if pid_alive(pid) else (0, 0)

    def start_backend(self) -> int:
        port, _ = self.backend()
        if port:
            return port
        previous = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            previous = int(self.backend_file.read_text().split()[0])
        self.backend_file.unlink(missing_ok=True)
        spawn_detached(
            [sys.executable, "-m", "cqdeploy.sandbox.backend", str(self.target), str(self.backend_file), str(previous)],
            log_path=str(self.root / "backend.log"),
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            port, _ = self.backend()
            if port:
                return port
            time.sleep(0.02)
        raise SandboxError(f"sandbox backend-core did not start; see {self.root / 'backend.log'}")

    def down(self) -> list[str]:
        """Stop every sandbox process; returns what was stopped."""
        stopped = []
        if not self.root.exists():
            return stopped
        stopped += self.cluster.stop_all()
        for pid_file in sorted((self.target / "tmp").glob("unidesk-deploy-*.d/pid")):
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if not (pid_file.parent / "exit").exists() and stop_pid(pid):
                stopped.append(f"step {pid_file.parent.name} (pid {pid})")
        port, pid = self.backend()
        if pid and stop_pid(pid):
            stopped.append(f"backend-core simulator on 127.0.0.1:{port} (pid {pid})")
        if self.sshd.running():
            port, pid = self.sshd.port, self.sshd.pid
            if self.sshd.stop():
                stopped.append(f"sshd on 127.0.0.1:{port} (pid {pid})")
        return stopped

    # -- the remote -------------------------------------------------------------

    def commit(
        self, message: str, files: dict[str, str] | None = None, *, push: bool = True, branch: str = "main"
    ) -> str:
        """Commit changes to the sample app (and push them); returns the new commit id."""
        for rel, text in (files or {}).items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._git("-C", str(self.work), "add", "-A")
        self._git("-C", str(self.work), *GIT_ID, "commit", "--quiet", "--allow-empty", "-m", message)
        sha = self._git("-C", str(self.work), "rev-parse", "HEAD").strip()
        if push:
            self._git("-C", str(self.work), "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
        return sha

    def head(self, branch: str = "main") -> str:
        return self._git("--git-dir", str(self.remote), "rev-parse", f"refs/heads/{branch}").strip()

    # -- faults and evidence ------------------------------------------------------

    def set_fault(self, name: str, value: Any) -> None:
        faults = self.cluster.faults()
        if name.startswith("sleep."):
            faults.setdefault("sleep", {})[name.split(".", 1)[1]] = float(value)
        elif name in FAULTS:
            faults[name] = bool(value)
        else:
            raise SandboxError(f"unknown fault {name!r}; faults: {', '.join(FAULTS)}, sleep.<step>")
        self.cluster.set_faults(faults)

    def clear_faults(self) -> None:
        self.cluster.set_faults({})

    def counters(self) -> dict[str, int]:
        return self.cluster.counters()

    def status(self) -> dict[str, Any]:
        state = self.cluster.read()
        port, pid = self.backend()
        return {
            "root": str(self.root),
            "remoteHead": self.head() if self.exists() else None,
            "backend": {"port": port, "pid": pid} if pid else None,
            "deployments": {
                key: {
                    "image": d.get("image"),
                    "commit": d.get("env", {}).get("CODE_QUEUE_DEPLOY_COMMIT"),
                    "pods": [p["name"] for p in d.get("pods", []) if pid_alive(p["pid"])],
                }
                for key, d in state["deployments"].items()
            },
            "faults": self.cluster.faults(),
            "counters": self.counters(),
        }

    def _git(self, *args: str) -> str:
        env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
        done = subprocess.run(["git", *args], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SandboxError(f"git {' '.join(args[:3])} failed: {done.stderr.strip()}")
        return done.stdout


def _toml(value: str) -> str:
    return json.dumps(value)
