"""From invoking `cqdeploy codex deploy` to its JSON on stdout, beside a bare interpreter start.

Goal: the median of 20 at most 150 ms above `python -c pass` measured in the same run.
Each job is waited for (untimed) before the next, so runners do not compete with the timing.
Run: python tools/bench_cli.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import PY, median_ms, sandbox_workspace, table, time_command, wait_terminal

RUNS = 20
# the console script users run (no runpy); `python -m cqdeploy` where it is not installed
_script = Path(PY).with_name("cqdeploy")
CQDEPLOY = [str(_script)] if _script.exists() else [PY, "-m", "cqdeploy"]


def main() -> None:
    ws, box = sandbox_workspace()
    head = box.head()
    bare, deploy, status = [], [], []
    try:
        for _ in range(RUNS):
            bare.append(time_command([PY, "-c", "pass"])[0])
            elapsed, out = time_command([*CQDEPLOY, "codex", "deploy", head])
            deploy.append(elapsed)
            job = json.loads(out)["jobId"]
            wait_terminal(ws, job)
            status.append(time_command([*CQDEPLOY, "job", "status", job, "--json"])[0])
    finally:
        box.down()
    b, d, s = median_ms(bare), median_ms(deploy), median_ms(status)
    table(
        f"codex deploy to JSON, median of {RUNS} (same run)",
        ["command", "median ms", "above bare python ms"],
        [["python -c pass", b, 0.0], ["cqdeploy codex deploy", d, d - b], ["cqdeploy job status --json", s, s - b]],
    )
    print(f"\n  goal: codex deploy <= bare + 150 ms -> {'met' if d - b <= 150 else 'NOT met'} ({d - b:.0f} ms)")


if __name__ == "__main__":
    main()
