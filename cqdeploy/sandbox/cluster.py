"""The sandbox's simulated D601 cluster: images, containerd, deployments and real pod processes.

Docker and k3s cannot run here, so this keeps their state in one JSON file (under a file lock)
and runs each pod as a real loopback HTTP process from the image's files.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

READY_WITHIN_S = 20.0


class Cluster:
    def __init__(self, target: Path) -> None:
        self.target = target
        self.state_dir = target / "state"
        self.state_file = self.state_dir / "cluster.json"
        self.faults_file = self.state_dir / "faults.json"
        self.counters_file = self.state_dir / "counters.json"

    # -- state --------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The cluster state, saved atomically when the block ends without error."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "cluster.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            yield state
            _write_json(self.state_file, state)

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"images": {}, "containerd": {}, "deployments": {}, "services": {}}

    def faults(self) -> dict[str, Any]:
        try:
            return json.loads(self.faults_file.read_text())
        except FileNotFoundError:
            return {}

    def set_faults(self, faults: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.faults_file, faults)

    def slow(self, step: str) -> None:
        """The `sleep` fault: the named step sleeps N seconds before it acts."""
        seconds = self.faults().get("sleep", {}).get(step)
        if seconds:
            time.sleep(float(seconds))

    def count(self, what: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "counters.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            counters = self.counters()
            counters[what] = counters.get(what, 0) + 1
            _write_json(self.counters_file, counters)

    def counters(self) -> dict[str, int]:
        try:
            return json.loads(self.counters_file.read_text())
        except FileNotFoundError:
            return {}

    # -- pods -----------------------------------------------------------------

    def roll(self, state: dict[str, Any], key: str) -> None:
        """Start a pod from the deployment's template, wait until it answers, stop the old ones."""
        dep = state["deployments"][key]
        image = state["containerd"].get(dep["image"])
        if image is None:
            raise SystemExit(f"pod for {key}: image {dep['image']} not present in containerd (ErrImageNeverPull)")
        dep["generation"] = dep.get("generation", 0) + 1
        pod = self.start_pod(key, dep, image["dir"])
        old = dep.get("pods", [])
        dep["pods"] = [*old, pod]
        if not self.faults().get("old_pod_answers"):
            for p in old:
                stop_pid(p["pid"])
            dep["pods"] = [pod]
        dep["ready_generation"] = dep["generation"]

    def start_pod(self, key: str, dep: dict[str, Any], image_dir: str) -> dict[str, Any]:
        pods_dir = self.state_dir / "pods"
        pods_dir.mkdir(exist_ok=True)
        name = f"{key.split('/')[1]}-{int(time.time() * 1000) % 10**9:09d}"
        port_file = pods_dir / f"{name}.port"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "POD_NAME": name,
            "SANDBOX_PORT_FILE": str(port_file),
            **dep.get("env", {}),
        }
        command = [sys.executable if c in ("python", "python3") else c for c in dep["command"]]
        with open(pods_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=image_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        end = time.monotonic() + READY_WITHIN_S
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > end:
                stop_pid(proc.pid)
                raise SystemExit(f"pod {name} did not become ready (see {pods_dir / (name + '.log')})")
            time.sleep(0.01)
        return {
            "name": name,
            "pid": proc.pid,
            "port": int(port_file.read_text()),
            "image": dep["image"],
            "started": time.time(),
        }

    def answering_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod the Service routes to: the newest, or the oldest when the fault keeps it."""
        dep = self.read()["deployments"].get(f"{namespace}/{name}")
        if not dep:
            return None
        live = [p for p in dep.get("pods", []) if pid_alive(p["pid"])]
        if not live:
            return None
        return live[0] if self.faults().get("old_pod_answers") else live[-1]

    def stop_all(self) -> list[str]:
        stopped = []
        with self.locked() as state:
            for dep in state["deployments"].values():
                for p in dep.get("pods", []):
                    if stop_pid(p["pid"]):
                        stopped.append(f"pod {p['name']} (pid {p['pid']})")
                dep["pods"] = []
        return stopped


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, grace_s: float = 2.0) -> bool:
    """SIGTERM the process group, SIGKILL after `grace_s`; True if something was running."""
    if not pid_alive(pid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            if not pid_alive(pid):
                return True
            time.sleep(0.02)
    return True


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
