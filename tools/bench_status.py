"""`cqdeploy job status` on a job with 10,000 events, whole process, beside a bare interpreter.

Goal: under 150 ms wall. The first status folds every event and caches the projection
(a snapshot keyed by the hash of the last folded event); later ones fold only what is newer.
Run: python tools/bench_status.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import PY, median_ms, table, time_command

EVENTS = 10_000
RUNS = 10


def build_job(home: Path) -> str:
    from journal import Journal

    job = "cq-bench-10k"
    created = {
        "service": "code-queue",
        "provider": "D601",
        "requested": "a" * 40,
        "repo": "/r",
        "timeout_ms": 900000,
        "entry": "codex",
        "who": {},
        "manifest": {},
    }
    with Journal(home) as j:
        j.append(job, 0, "job.created", created)
        j.append(job, 1, "runner.started", {"pid": 1, "host": "bench"})
        j.append(job, 2, "step.started", {"step": "fetch", "attempt": 1})
        seq = 3
        while seq < EVENTS:
            n = min(500, EVENTS - seq)
            j.append_batch(
                job, seq, [("step.remote_log", {"step": "fetch", "log": f"/tmp/l{seq + i}"}) for i in range(n)]
            )
            seq += n
    return job


def fold_ms(home: Path, job: str, snapshot: bool) -> float:
    from cqdeploy.jobs import SNAPSHOT, load_view
    from journal import Journal

    with Journal(home) as j:
        if not snapshot:
            j.db.execute("DELETE FROM snapshots")
            j.db.conn.commit()
        began = time.perf_counter()
        view = load_view(j, job, save_snapshot=snapshot)
        elapsed = time.perf_counter() - began
        assert view.seq == EVENTS
        if snapshot:
            assert j.load_snapshot(job, SNAPSHOT) is not None
    return elapsed * 1000


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cqbench-")) / "ws"
    env = {"CQDEPLOY_HOME": str(home)}
    os.environ.update(env)
    job = build_job(home)
    cold_fold = fold_ms(home, job, snapshot=False)
    script = Path(PY).with_name("cqdeploy")
    status = [str(script) if script.exists() else PY, *([] if script.exists() else ["-m", "cqdeploy"]), "job",
              "status", job, "--json"]  # fmt: skip
    first, _ = time_command(status, env)  # folds 10k events, writes the snapshot
    bare = [time_command([PY, "-c", "pass"])[0] for _ in range(RUNS)]
    warm = [time_command(status, env)[0] for _ in range(RUNS)]
    warm_fold = fold_ms(home, job, snapshot=True)
    table(
        f"job status on {EVENTS:,} events (same run; warm = median of {RUNS})",
        ["what", "ms"],
        [
            ["python -c pass", median_ms(bare)],
            ["job status, first (fold all, write snapshot)", first * 1000],
            ["job status, warm (from snapshot)", median_ms(warm)],
            ["in-process fold of all events, no snapshot", cold_fold],
            ["in-process load from snapshot", warm_fold],
        ],
    )
    print(f"\n  goal: warm job status < 150 ms -> {'met' if median_ms(warm) < 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
