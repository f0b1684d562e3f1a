"""Eight shell commands against one real sshd on 127.0.0.1, five ways, side by side in one run:
cqdeploy's reused paramiko connection, a new `ssh` per command, OpenSSH ControlMaster, and
ansible-playbook (defaults; pipelining + ControlPersist). Plus the time from a detached step's
end to its journaled sentinel over SSH.

Goals: per-command cost on the reused connection <= ControlMaster's; the eight commands with
connect >= 30x faster than ansible-playbook with pipelining; a step's end journaled within 20 ms.
ansible-core is needed for its rows only (`pip install ansible-core`; `tools/dev bench` does it).
Run: python tools/bench_ssh.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import PY, sandbox_workspace, table, wait_terminal

from cqdeploy.config import load_config
from cqdeploy.render import parse_ts
from cqdeploy.transport.ssh import SSHTransport

COMMANDS = [f"echo step-{i} >/dev/null" for i in range(1, 9)]
ROUNDS = 5


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def ssh_args(box, known: Path, extra: list[str]) -> list[str]:
    return [
        "ssh",
        "-p",
        str(box.sshd.port),
        "-i",
        str(box.sshd.user_key),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        *extra,
        f"{box.sshd.user}@127.0.0.1",
    ]


def main() -> None:
    ws, box = sandbox_workspace(ssh=True)
    home = ws.home
    known = home / "known_hosts"
    provider = load_config(ws.config_path)["D601"]
    rows = []
    try:
        # 1. paramiko, one connection
        def paramiko_eight() -> None:
            t = SSHTransport(provider, known)
            for c in COMMANDS:
                assert t.run(c, timeout=10).exit_code == 0
            t.close()

        t = SSHTransport(provider, known)
        t.connect()
        per_cmd = statistics.median(timed(lambda: t.run(COMMANDS[0], timeout=10)) for _ in range(40))
        t.close()
        eight = statistics.median(timed(paramiko_eight) for _ in range(ROUNDS))
        rows.append(["cqdeploy paramiko, one connection", per_cmd * 1000, eight * 1000])

        # 2. a new ssh process per command
        plain = ssh_args(box, known, [])
        per_new = statistics.median(timed(lambda: subprocess.run([*plain, COMMANDS[0]], check=True)) for _ in range(10))
        eight_new = statistics.median(
            timed(lambda: [subprocess.run([*plain, c], check=True) for c in COMMANDS]) for _ in range(ROUNDS)
        )
        rows.append(["new ssh process per command", per_new * 1000, eight_new * 1000])

        # 3. ControlMaster
        sock = Path(tempfile.mkdtemp(prefix="cqcm-")) / "cm"
        master = ssh_args(
            box, known, ["-o", "ControlMaster=auto", "-o", f"ControlPath={sock}", "-o", "ControlPersist=60"]
        )
        subprocess.run([*master, "true"], check=True)
        per_cm = statistics.median(timed(lambda: subprocess.run([*master, COMMANDS[0]], check=True)) for _ in range(20))

        def cm_eight() -> None:
            subprocess.run([*master[:-1], "-O", "exit", master[-1]], capture_output=True, check=False)
            for c in COMMANDS:
                subprocess.run([*master, c], check=True)

        eight_cm = statistics.median(timed(cm_eight) for _ in range(ROUNDS))
        subprocess.run([*master[:-1], "-O", "exit", master[-1]], capture_output=True, check=False)
        rows.append(["OpenSSH ControlMaster", per_cm * 1000, eight_cm * 1000])

        # 4. ansible-playbook
        ansible = shutil.which("ansible-playbook") or str(Path(PY).with_name("ansible-playbook"))
        ansible_rows = {}
        if os.path.exists(ansible):
            work = Path(tempfile.mkdtemp(prefix="cqansible-"))
            (work / "inventory").write_text(
                f"d601 ansible_host=127.0.0.1 ansible_port={box.sshd.port} ansible_user={box.sshd.user} "
                f"ansible_ssh_private_key_file={box.sshd.user_key} ansible_python_interpreter={PY}\n"
            )
            tasks = "".join(f"    - shell: {c}\n" for c in COMMANDS)
            (work / "play.yml").write_text(f"- hosts: d601\n  gather_facts: false\n  tasks:\n{tasks}")
            for label, extra in (
                ("ansible-playbook, defaults", {}),
                (
                    "ansible-playbook, pipelining + ControlPersist",
                    {"ANSIBLE_PIPELINING": "True", "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s"},
                ),
            ):
                env = {
                    **os.environ,
                    "ANSIBLE_HOST_KEY_CHECKING": "True",
                    "ANSIBLE_SSH_COMMON_ARGS": f"-o UserKnownHostsFile={known}",
                    "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
                    "ANSIBLE_NOCOLOR": "1",
                    **extra,
                }
                runs = []
                for _ in range(3):
                    began = time.perf_counter()
                    subprocess.run(
                        [ansible, "-i", str(work / "inventory"), str(work / "play.yml")],
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                    runs.append(time.perf_counter() - began)
                ansible_rows[label] = statistics.median(runs)
                rows.append([label, ansible_rows[label] / 8 * 1000, ansible_rows[label] * 1000])
        else:
            rows.append(["ansible-playbook (not installed: pip install ansible-core)", "-", "-"])

        # 5. a step's end to its journaled sentinel, over SSH
        lags = []
        for _ in range(3):
            out = subprocess.run(
                [PY, "-m", "cqdeploy", "codex", "deploy", box.head()], capture_output=True, text=True, check=True
            )
            import json

            job = json.loads(out.stdout)["jobId"]
            wait_terminal(ws, job)
            with ws.journal() as j:
                events = j.read(job)
            for e in events:
                if e.type == "step.sentinel_seen":
                    ended = Path(e.data["sentinel"]).stat().st_mtime
                    lags.append(parse_ts(e.ts).timestamp() - ended)
    finally:
        box.down()
    table(
        "eight shell commands over SSH to 127.0.0.1 (same sshd, same run)",
        ["way", "ms per command", "ms for eight (connect included)"],
        rows,
    )
    lag_ms = sorted(x * 1000 for x in lags)
    print(
        f"\n  step end -> journaled sentinel over SSH: median {statistics.median(lag_ms):.1f} ms, "
        f"max {lag_ms[-1]:.1f} ms over {len(lag_ms)} steps (goal: within 20 ms)"
    )
    print(f"  per command, paramiko / ControlMaster: {per_cmd / per_cm:.2f} (goal <= 1.0)")
    piped = ansible_rows.get("ansible-playbook, pipelining + ControlPersist")
    if piped:
        print(f"  eight with connect, ansible pipelining / paramiko: {piped / eight:.0f}x (goal >= 30x)")


if __name__ == "__main__":
    main()
