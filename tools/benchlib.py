"""Small helpers shared by the benchmarks: timing a command and printing a table."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

PY = sys.executable


def time_command(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds for one run of argv, and its stdout."""
    began = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed, done.stdout


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def sandbox_workspace(ssh: bool = False):
    """A fresh private workspace with the sandbox D601 up: (workspace, sandbox)."""
    import tempfile
    from pathlib import Path

    from cqdeploy.sandbox import Sandbox
    from cqdeploy.workspace import Workspace

    home = Path(tempfile.mkdtemp(prefix="cqbench-")) / "ws"
    os.environ["CQDEPLOY_HOME"] = str(home)
    ws = Workspace(home).ensure()
    box = Sandbox(ws)
    box.up(ssh=ssh)
    return ws, box


def wait_terminal(ws, job: str, limit_s: float = 60.0):
    """The job's view once it has ended (or once `limit_s` has passed)."""
    from cqdeploy.jobs import load_view

    end = time.monotonic() + limit_s
    while True:
        with ws.journal() as j:
            view = load_view(j, job, save_snapshot=False)
        if view.state.terminal or time.monotonic() > end:
            return view
        time.sleep(0.05)
