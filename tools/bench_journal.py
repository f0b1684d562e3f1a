"""Durable appends (one transaction per event, JSONL flushed) under synchronous=FULL and NORMAL,
batched appends, and replaying 10,000 events, all in one run.
Run: python tools/bench_journal.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import table

from journal import Journal

APPENDS = 2000
REPLAY = 10_000


def appends_per_s(sync: str) -> float:
    with Journal(Path(tempfile.mkdtemp(prefix="cqbench-")), synchronous=sync) as j:
        began = time.perf_counter()
        for i in range(APPENDS):
            j.append("s", i, "step.remote_log", {"step": "build", "log": f"/tmp/x{i}"})
        return APPENDS / (time.perf_counter() - began)


def bare_sqlite_utils_per_s(sync: str) -> float:
    """The floor: sqlite-utils inserting one row per transaction, no fence, no hash, no mirror."""
    import sqlite_utils

    db = sqlite_utils.Database(Path(tempfile.mkdtemp(prefix="cqbench-")) / "bare.db")
    db.enable_wal()
    db.execute(f"PRAGMA synchronous={sync}")
    table_ = db["events"]
    table_.create({"stream": str, "seq": int, "data": str}, pk=("stream", "seq"))
    began = time.perf_counter()
    for i in range(APPENDS):
        with db.atomic():
            table_.insert({"stream": "s", "seq": i, "data": f'{{"log":"/tmp/x{i}"}}'})
    return APPENDS / (time.perf_counter() - began)


def batched_per_s() -> float:
    with Journal(Path(tempfile.mkdtemp(prefix="cqbench-"))) as j:
        began = time.perf_counter()
        for i in range(0, APPENDS * 5, 3):
            j.append_batch("s", i, [("tick", {"i": i + k}) for k in range(3)])
        return (APPENDS * 5 + 2) // 3 * 3 / (time.perf_counter() - began)


def replay_ms() -> tuple[float, float]:
    with Journal(Path(tempfile.mkdtemp(prefix="cqbench-"))) as j:
        for i in range(0, REPLAY, 500):
            j.append_batch("s", i, [("tick", {"i": i + k}) for k in range(500)])
        began = time.perf_counter()
        events = j.read("s")
        read = time.perf_counter() - began
        from journal import verify

        began = time.perf_counter()
        assert verify(j) == []
        check = time.perf_counter() - began
        assert len(events) == REPLAY
    return read * 1000, check * 1000


def main() -> None:
    full, normal, batched = appends_per_s("FULL"), appends_per_s("NORMAL"), batched_per_s()
    bare_full, bare_normal = bare_sqlite_utils_per_s("FULL"), bare_sqlite_utils_per_s("NORMAL")
    read, check = replay_ms()
    table(
        f"journal appends ({APPENDS:,} each) and replay ({REPLAY:,} events), same run",
        ["what", "value", "unit"],
        [
            ["append, synchronous=FULL (the default)", full, "events/s"],
            ["append, synchronous=NORMAL", normal, "events/s"],
            ["bare sqlite-utils insert, FULL", bare_full, "events/s"],
            ["bare sqlite-utils insert, NORMAL", bare_normal, "events/s"],
            ["journal FULL / bare FULL", f"{full / bare_full:.2f}", "ratio"],
            ["journal FULL / journal NORMAL", f"{full / normal:.2f}", "ratio"],
            ["append_batch of 3, FULL", batched, "events/s"],
            ["read(stream) of all events", read, "ms"],
            ["journal verify (chain + mirror)", check, "ms"],
        ],
    )


if __name__ == "__main__":
    main()
