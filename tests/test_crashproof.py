"""Crash-proof jobs: the deploy lock, leases, deadlines, cancel, and a journal that survives kills."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import cqdeploy, start, wait_done, wait_until

from cqdeploy.jobs import runner_state
from cqdeploy.lock import read_lock
from cqdeploy.projection import JobView
from cqdeploy.render import parse_ts
from cqdeploy.sandbox.cluster import pid_alive
from journal import Journal, verify


def lock_holder(ws, settle_s: float = 10.0) -> str | None:
    """Who holds D601/code-queue once the runner has had time to release it after the job's end
    (a lock left by an ended job is free to take anyway)."""
    end = time.monotonic() + settle_s
    while True:
        with ws.journal() as j:
            holder = read_lock(j, "D601", "code-queue").holder
        if holder is None or time.monotonic() > end:
            return holder
        time.sleep(0.05)


def step_pid(view, step: str) -> int:
    return int((Path(view.step(step)["remoteDir"]) / "pid").read_text())


def test_ten_deploys_at_once_one_runs_nine_are_refused_with_the_lock(ws, sandbox):
    sandbox.set_fault("sleep.build", 1)
    head = sandbox.head()
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: cqdeploy("codex", "deploy", head), range(10)))
    won = [r for r in results if r.returncode == 0]
    lost = [r for r in results if r.returncode != 0]
    assert len(won) == 1 and len(lost) == 9
    job = json.loads(won[0].stdout)["jobId"]
    for r in lost:
        assert r.returncode == 9
        assert f"D601/code-queue is locked by job {job} (pid " in r.stderr and ", since 20" in r.stderr
    with ws.journal() as j:
        assert [s.stream for s in j.streams() if s.stream.startswith("cq-")] == [job]
    assert wait_done(ws, job).state.value == "succeeded"
    assert lock_holder(ws) is None
    assert sandbox.counters()["docker build"] == 1


def test_wait_queues_behind_the_lock(ws, sandbox):
    sandbox.set_fault("sleep.build", 1)
    first = start("codex", "deploy", sandbox.head())
    second = start("codex", "deploy", sandbox.head(), "--wait")  # returns once it holds the lock
    assert wait_done(ws, first["jobId"]).state.value == "succeeded"
    assert wait_done(ws, second["jobId"]).state.value == "succeeded"


def test_a_stale_lock_is_refused_then_taken_over_by_resume(ws, sandbox):
    job = start("codex", "deploy", sandbox.head(), env={"CQDEPLOY_FAULT_HOLD_AFTER": "rsync"})["jobId"]
    view = wait_until(ws, job, lambda v: "rsync" in v.machine.completed)
    os.kill(view.data["runner"]["pid"], signal.SIGKILL)
    refused = cqdeploy("codex", "deploy", sandbox.head())
    assert refused.returncode == 9 and "the lock is stale" in refused.stderr and f"job resume {job}" in refused.stderr
    listed = json.loads(cqdeploy("job", "resume", "--stale").stdout)
    assert [r["jobId"] for r in listed] == [job] and listed[0]["resumeFrom"] == "build"
    assert wait_done(ws, job).state.value == "succeeded"
    assert lock_holder(ws) is None
    assert wait_done(ws, start("codex", "deploy", sandbox.head())["jobId"]).state.value == "succeeded"


def test_lock_release_force_is_journaled_and_blocks_a_late_resume(ws, sandbox):
    job = start("codex", "deploy", sandbox.head(), env={"CQDEPLOY_FAULT_HOLD_AFTER": "fetch"})["jobId"]
    view = wait_until(ws, job, lambda v: "fetch" in v.machine.completed)
    live = cqdeploy("lock", "release", "--force")
    assert live.returncode == 5 and "live runner" in live.stderr
    os.kill(view.data["runner"]["pid"], signal.SIGKILL)
    done = cqdeploy("lock", "release", "--force")
    assert done.returncode == 0 and job in done.stdout
    with ws.journal() as j:
        last = j.read("lock.D601.code-queue")[-1]
    assert last.type == "lock.released" and last.data["reason"] == "forced" and "user" in last.data["by"]
    other = start("codex", "deploy", sandbox.head(), env={"CQDEPLOY_FAULT_HOLD_AFTER": "fetch"})["jobId"]
    wait_until(ws, other, lambda v: "fetch" in v.machine.completed)
    late = cqdeploy("job", "resume", job)
    assert late.returncode == 9 and f"locked by job {other}" in late.stderr  # never two runners on one target
    cqdeploy("job", "cancel", other)


def test_a_step_sleeping_forever_fails_at_the_deadline(ws, sandbox):
    sandbox.set_fault("sleep.build", 600)
    job = start("codex", "deploy", sandbox.head(), "--timeout-ms", "8000")["jobId"]
    view = wait_done(ws, job, timeout=30)
    took = (parse_ts(view.data["endedAt"]) - parse_ts(view.data["createdAt"])).total_seconds()
    assert view.state.value == "timed_out" and view.data["failedStep"] == "build"
    assert 7.2 <= took <= 8.8, took  # the deadline +-10%
    assert not pid_alive(step_pid(view, "build"))
    assert lock_holder(ws) is None
    assert "deadline of 8s passed during step build" in view.data["error"]


@pytest.mark.parametrize("step", ["build", "import", "apply", "pin", "restart"])
def test_cancel_inside_a_step(ws, sandbox, step):
    sandbox.set_fault(f"sleep.{step}", 30)
    job = start("codex", "deploy", sandbox.head())["jobId"]
    view = wait_until(ws, job, lambda v: v.step(step)["remoteDir"] is not None)
    began = time.monotonic()
    done = cqdeploy("job", "cancel", job)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"jobId": job, "state": "cancelled", "step": step}
    assert time.monotonic() - began < 10
    view = wait_done(ws, job)
    assert view.state.value == "cancelled" and view.step(step)["state"] == "failed"
    assert not pid_alive(step_pid(view, step))
    assert lock_holder(ws) is None


@pytest.mark.parametrize("after", ["fetch", "rsync"])
def test_cancel_between_steps_with_the_runner_held(ws, sandbox, after):
    job = start(
        "codex", "deploy", sandbox.head(), env={"CQDEPLOY_FAULT_HOLD_AFTER": after, "CQDEPLOY_FAULT_HOLD_S": "3"}
    )["jobId"]
    wait_until(ws, job, lambda v: after in v.machine.completed)
    done = cqdeploy("job", "cancel", job, "--wait-s", "1")
    assert done.returncode == 0 and json.loads(done.stdout)["state"] == "cancelled"
    time.sleep(3.5)  # the held runner wakes, finds the job cancelled, and does nothing more
    view = wait_done(ws, job)
    assert view.state.value == "cancelled"
    assert [s["state"] for s in view.data["steps"]][2:] == ["pending"] * 6
    assert sandbox.counters().get("docker build", 0) == 0
    refused = cqdeploy("job", "cancel", job)
    assert refused.returncode == 5 and "already ended cancelled" in refused.stderr


def test_restart_is_not_issued_twice_when_the_target_lost_the_step(ws, sandbox):
    sandbox.set_fault("rollout_hang", True)
    job = start("codex", "deploy", sandbox.head())["jobId"]

    def recorded() -> bool:  # the step has restarted both and recorded it on the Deployments
        deployments = sandbox.cluster.read()["deployments"].values()
        return len(deployments) == 2 and all(
            d["annotations"].get("cqdeploy.unidesk.io/restarted-by") == job for d in deployments
        )

    deadline = time.monotonic() + 30
    while not recorded() and time.monotonic() < deadline:
        time.sleep(0.05)
    view = wait_until(ws, job, lambda v: v.step("restart")["remoteDir"] is not None)
    os.kill(view.data["runner"]["pid"], signal.SIGKILL)
    run_dir = Path(view.step("restart")["remoteDir"])
    os.killpg(step_pid(view, "restart"), signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)  # as if the target's /tmp was wiped
    sandbox.set_fault("rollout_hang", False)
    assert cqdeploy("job", "resume", job).returncode == 0
    view = wait_done(ws, job)
    assert view.state.value == "succeeded", view.data["error"]
    assert view.step("restart")["attempt"] == 2
    assert sandbox.counters()["kubectl rollout restart"] == 1
    log = Path(view.step("restart")["remoteLog"]).read_text()
    assert f"rollout restart already issued by job {job}" in log


def test_status_says_runner_lost_once_the_lease_expired():
    view = JobView("cq-x")
    old = (datetime.now(UTC) - timedelta(seconds=95)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    view.apply(1, old, "job.created", {"service": "code-queue", "provider": "D601", "requested": "a" * 7})
    view.apply(2, old, "runner.started", {"pid": 1, "host": "elsewhere", "lease_s": 20})
    alive, why = runner_state(view)
    assert not alive and why.startswith("runner lost (last heartbeat 9") and why.endswith(" s ago)")
    fresh = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    view.apply(3, fresh, "runner.heartbeat", {})
    assert runner_state(view)[0]


def test_heartbeats_are_journaled_while_a_step_runs(ws, sandbox):
    sandbox.set_fault("sleep.build", 6.5)  # longer than one heartbeat slice (5 s at most)
    job = start("codex", "deploy", sandbox.head())["jobId"]
    assert wait_done(ws, job).state.value == "succeeded"
    with ws.journal() as j:
        assert "runner.heartbeat" in [e.type for e in j.read(job)]


APPENDER = """
import sys
from journal import Journal
j = Journal(sys.argv[1])
seq = j.last_seq("s")
while True:
    j.append_batch("s", seq, [("tick", {"n": seq + 1, "pad": "x" * 3000}), ("tock", {"n": seq + 2})])
    seq += 2
"""


def test_a_process_killed_mid_append_leaves_an_intact_journal(tmp_path):
    directory = tmp_path / "j"
    rng = random.Random(7)
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", APPENDER, str(directory)], cwd=Path(__file__).parents[1])
        time.sleep(0.3 + rng.random() * 0.3)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        with Journal(directory) as j:  # the next open repairs the mirror
            assert j.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert verify(j) == [], "mirror and chain verify after a kill"
            assert j.last_seq("s") % 2 == 0  # batches are all or nothing
    with Journal(directory) as j:
        assert j.last_seq("s") > 0


def test_a_duplicated_mirror_line_is_named(tmp_path):
    with Journal(tmp_path / "j") as j:
        for i in range(3):
            j.append("s", i, "tick", {"i": i})
        path = j.mirror_path("s")
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(lines[0] + lines[1] + lines[1] + lines[2])
        problems = verify(j)
    assert (problems[0].file, problems[0].line, problems[0].seq) == (str(path), 3, 3)
    assert "holds seq 2 where SQLite has seq 3" in problems[0].message
    assert any(p.line == 4 and "no event in SQLite" in p.message for p in problems)


def test_sqlite_never_loses_an_event_to_a_mirror_problem(tmp_path):
    with Journal(tmp_path / "j") as j:
        j.append("s", 0, "a", {})
        j.mirror_path("s").write_text("garbage\n")
        j.append("s", 1, "b", {})  # the mirror is foreign: SQLite still takes the event
        assert [e.type for e in j.read("s")] == ["a", "b"]
        assert verify(j)[0].line == 1
    conn = sqlite3.connect(tmp_path / "j" / "journal.db")
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    conn.close()
