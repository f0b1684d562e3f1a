"""A short run of tools/chaos: kills at a boundary and inside a step, then the promises hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).parents[1] / "tools"


def test_a_short_chaos_run_keeps_every_promise(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "chaos.py"),
            "--trials",
            "1",
            "--only",
            "after-rsync,in-build,in-restart",
            "--max-seconds",
            "120",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "CQDEPLOY_HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    totals = json.loads(done.stdout)["totals"]
    assert totals["trials"] == 3 and totals["kills"] == 3
    assert totals["succeeded_after_resume"] == 3
    assert totals["steps_rerun_after_completed"] == 0
    assert totals["side_effects_not_exactly_once"] == 0
    assert totals["journal_equal_to_jsonl"] == 3
    assert totals["leftover_remote_processes"] == 0
