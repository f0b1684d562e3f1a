"""Reconciler, history, audit and rollback: plan, apply, rollback, replay, rebuild, prune."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from conftest import cqdeploy, start, wait_done

from cqdeploy.cli import cli
from cqdeploy.history import prunable, rollback_target
from cqdeploy.projection import JobView
from journal import Journal, verify


def deployed(ws, sandbox, commit: str | None = None) -> dict:
    job = start("codex", "deploy", commit or sandbox.head())
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "succeeded", view.data["error"]
    return job


def test_plan_is_in_sync_after_a_deploy_and_drifted_after_a_push(ws, sandbox):
    first = cqdeploy("deploy", "plan", "--json")
    assert first.returncode == 1
    assert json.loads(first.stdout)[0]["liveCommit"] is None  # nothing deployed yet
    deployed(ws, sandbox)
    ok = cqdeploy("deploy", "plan", "--service", "code-queue", "--json")
    assert ok.returncode == 0, ok.stderr
    [p] = json.loads(ok.stdout)
    assert p["inSync"] and p["liveCommit"] == sandbox.head() and p["action"] == "none"
    newer = sandbox.commit("bump", {"VERSION": "5\n"})
    drifted = cqdeploy("deploy", "plan")
    assert drifted.returncode == 1
    assert f"drifted: a deploy would build and roll out {newer[:12]}" in drifted.stdout


def test_plan_errors_exit_2(ws, sandbox):
    done = cqdeploy("deploy", "plan", "--service", "nope")
    assert done.returncode == 2 and "no service 'nope'" in done.stderr


def test_apply_with_nothing_drifted_starts_no_job(ws, sandbox):
    deployed(ws, sandbox)
    before = sandbox.counters()
    out = start("deploy", "apply")
    assert out["jobId"] is None and out["inSync"] is True and out["action"] == "none"
    with ws.journal() as j:
        assert len([s for s in j.streams() if s.stream.startswith("cq-")]) == 1
    assert sandbox.counters() == before
    forced = start("deploy", "apply", "--service", "code-queue", "--force")
    assert forced["jobId"] is not None
    assert wait_done(ws, forced["jobId"]).state.value == "succeeded"


def test_rollback_after_a_failed_deploy_picks_the_last_succeeded_commit(ws, sandbox):
    a = sandbox.head()
    deployed(ws, sandbox, a)
    b = sandbox.commit("b", {"VERSION": "b\n"})
    deployed(ws, sandbox, b)
    sandbox.set_fault("build_fail", True)
    bad = start("codex", "deploy", sandbox.commit("c", {"VERSION": "c\n"}))
    assert wait_done(ws, bad["jobId"]).state.value == "failed"
    sandbox.clear_faults()
    back = start("deploy", "rollback", "--service", "code-queue")
    assert back["rollbackOf"] == bad["jobId"] and back["requestedCommit"] == b
    view = wait_done(ws, back["jobId"])
    assert view.state.value == "succeeded" and view.data["rollbackOf"] == bad["jobId"]
    assert view.data["entry"] == "rollback"
    again = start("deploy", "rollback", "--service", "code-queue")  # undoes the rollback's b
    assert again["requestedCommit"] == a
    assert wait_done(ws, again["jobId"]).state.value == "succeeded"
    history = json.loads(cqdeploy("job", "history", "--service", "code-queue", "--json").stdout)
    assert [h["commit"] for h in history][:2] == [a, b]
    assert history[0]["entry"] == "rollback" and history[0]["who"].count("@") == 1


def fake_view(job_id: str, service: str, commit: str, end: str) -> JobView:
    v = JobView(job_id)
    v.apply(
        1, "2026-01-01T00:00:00.000000Z", "job.created", {"service": service, "provider": "D601", "requested": commit}
    )
    seq = 2
    if end == "job.succeeded":
        v.apply(2, "2026-01-01T00:00:01.000000Z", "runner.started", {})
        seq = 3
        for step in ("fetch", "rsync", "build", "import", "apply", "pin", "restart", "verify"):
            v.apply(seq, "2026-01-01T00:00:01.000000Z", "step.started", {"step": step, "attempt": 1})
            if step == "fetch":
                v.apply(seq + 1, "2026-01-01T00:00:01.000000Z", "commit.resolved", {"step": step, "commit": commit})
                seq += 1
            v.apply(seq + 1, "2026-01-01T00:00:01.000000Z", "step.completed", {"step": step})
            seq += 2
    v.apply(seq, "2026-01-01T00:00:02.000000Z", end, {})
    return v


def test_rollback_never_targets_a_failed_job_or_another_service():
    views = [  # newest first
        fake_view("cq-5", "code-queue", "e" * 40, "job.failed"),
        fake_view("cq-4", "other", "d" * 40, "job.succeeded"),
        fake_view("cq-3", "code-queue", "c" * 40, "job.failed"),
        fake_view("cq-2", "code-queue", "b" * 40, "job.succeeded"),
        fake_view("cq-1", "code-queue", "a" * 40, "job.succeeded"),
    ]
    target, undone = rollback_target(views, "code-queue")
    assert (target.job_id, undone.job_id) == ("cq-2", "cq-5")
    assert rollback_target(views, "code-queue", to="a" * 7)[0].job_id == "cq-1"
    import pytest

    from cqdeploy.errors import InvalidInput

    with pytest.raises(InvalidInput, match="not a succeeded job"):
        rollback_target(views, "code-queue", to="cq-3")
    with pytest.raises(InvalidInput, match="no earlier succeeded deploy"):
        rollback_target(views[3:4], "code-queue")


def test_prune_keeps_the_last_succeeded_job_of_every_service():
    views = [
        fake_view("cq-4", "code-queue", "d" * 40, "job.failed"),
        fake_view("cq-3", "code-queue", "c" * 40, "job.succeeded"),
        fake_view("cq-2", "other", "b" * 40, "job.succeeded"),
        fake_view("cq-1", "code-queue", "a" * 40, "job.succeeded"),
    ]
    assert prunable(views, keep=1) == ["cq-1"]
    assert prunable(views, keep=0) == ["cq-4", "cq-1"]


def test_prune_removes_from_sqlite_and_jsonl_and_is_itself_journaled(ws, sandbox):
    first = deployed(ws, sandbox)["jobId"]
    sandbox.set_fault("build_fail", True)
    failed = start("codex", "deploy", sandbox.head())["jobId"]
    wait_done(ws, failed)
    done = cqdeploy("journal", "prune", "--keep", "0")
    assert done.returncode == 0 and f"removed {failed}" in done.stdout and first not in done.stdout
    with ws.journal() as j:
        assert [s.stream for s in j.streams() if s.stream != "lock.D601.code-queue"] == [first, "journal-audit"]
        assert j.read("journal-audit")[0].data["jobs"] == [failed]
        assert verify(j) == []
    assert not (ws.home / "jobs" / f"{failed}.jsonl").exists()


def test_rebuild_from_the_mirror_gives_an_identical_journal(ws, sandbox):
    job = deployed(ws, sandbox)["jobId"]
    with ws.journal() as j:
        original = [e.as_dict() for e in j.read(job)]
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        (ws.home / name).unlink(missing_ok=True)
    refused = cqdeploy("journal", "rebuild")
    assert refused.returncode == 0, refused.stderr
    assert "verified" in refused.stdout
    with ws.journal() as j:
        assert [e.as_dict() for e in j.read(job)] == original
        assert verify(j) == []
    again = cqdeploy("journal", "rebuild")
    assert again.returncode == 7 and "move it aside" in again.stderr


def test_rebuild_refuses_a_mirror_that_does_not_verify(ws, sandbox):
    job = deployed(ws, sandbox)["jobId"]
    path = ws.home / "jobs" / f"{job}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + lines[4:]))
    (ws.home / "journal.db").unlink()
    done = cqdeploy("journal", "rebuild")
    assert done.returncode == 7 and f"{path}:4: seq 5: out of order or chain broken" in done.stderr
    assert not (ws.home / "journal.db").exists()


def tamper(ws, sql: str) -> None:
    conn = sqlite3.connect(ws.home / "journal.db")
    conn.executescript("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;" + sql)
    conn.close()


def test_verify_detects_an_edited_deleted_and_reordered_event_in_sqlite(ws, sandbox):
    job = deployed(ws, sandbox)["jobId"]
    shutil.copy(ws.home / "journal.db", ws.home / "pristine.db")
    for sql, expect in [
        (f"UPDATE events SET data = '{{\"pid\":1}}' WHERE stream = '{job}' AND seq = 2;", "seq 2: hash does not match"),
        (f"DELETE FROM events WHERE stream = '{job}' AND seq = 3;", "seq 4: expected seq 3 (gap)"),
        (
            f"UPDATE events SET seq = -1 WHERE stream = '{job}' AND seq = 3;"
            f"UPDATE events SET seq = 3 WHERE stream = '{job}' AND seq = 4;"
            f"UPDATE events SET seq = 4 WHERE stream = '{job}' AND seq = -1;",
            "seq 3: previous-hash link broken",
        ),
    ]:
        for suffix in ("-wal", "-shm"):
            (ws.home / f"journal.db{suffix}").unlink(missing_ok=True)
        shutil.copy(ws.home / "pristine.db", ws.home / "journal.db")
        tamper(ws, sql)
        done = cqdeploy("journal", "verify", job)
        assert done.returncode == 7, sql
        assert expect in done.stderr, done.stderr


def recorded_journal(home) -> str:
    """A journal written with a fixed clock, so its rendering can be pinned exactly."""
    moments = iter(datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC) + timedelta(milliseconds=250 * i) for i in range(100))
    job = "cq-20260501T120000-abcdef"
    sha = "1234567890abcdef1234567890abcdef12345678"
    with Journal(home, clock=lambda: next(moments)) as j:
        events = [
            (
                "job.created",
                {
                    "service": "code-queue",
                    "provider": "D601",
                    "requested": "1234567",
                    "repo": "/r",
                    "timeout_ms": 900000,
                    "entry": "codex",
                    "who": {"user": "ops", "host": "main-1", "workspace": "/srv/cq"},
                    "manifest": {"digest": "sha256:00"},
                },
            ),
            ("runner.started", {"pid": 42, "host": "main-1"}),
            ("step.started", {"step": "fetch", "attempt": 1}),
            ("step.remote_log", {"step": "fetch", "log": "/tmp/unidesk-deploy-x-1-fetch-a1.log"}),
            ("step.sentinel_seen", {"step": "fetch", "exit_code": 0}),
            ("commit.resolved", {"step": "fetch", "commit": sha}),
            ("step.completed", {"step": "fetch", "duration_s": 0.75}),
            ("step.started", {"step": "rsync", "attempt": 1}),
            ("step.failed", {"step": "rsync", "error": "step rsync exited 23", "log_tail": "rsync: error"}),
            ("job.failed", {"step": "rsync", "error": "step rsync exited 23"}),
        ]
        for seq, (type, data) in enumerate(events):
            j.append(job, seq, type, data)
    return job


REPLAY = """\
job cq-20260501T120000-abcdef: failed
  +   0.000s  #1    job.created            code-queue on D601, requested 1234567 via codex by ops@main-1
  +   0.250s  #2    runner.started         pid 42 on main-1
  +   0.500s  #3    step.started           fetch (attempt 1)
  +   0.750s  #4    step.remote_log        fetch log /tmp/unidesk-deploy-x-1-fetch-a1.log
  +   1.000s  #5    step.sentinel_seen     fetch exit 0
  +   1.250s  #6    commit.resolved        1234567890abcdef1234567890abcdef12345678
  +   1.500s  #7    step.completed         fetch in 0.750s
  +   1.750s  #8    step.started           rsync (attempt 1)
  +   2.000s  #9    step.failed            rsync: step rsync exited 23
  +   2.250s  #10   job.failed             step rsync exited 23

per step: fetch 1.000s  rsync 0.250s  build -  import -  apply -  pin -  restart -  verify -
"""

HISTORY = """\
job                         service     commit       who                  entry     started                 took result
cq-20260501T120000-abcdef   code-queue  1234567890ab ops@main-1           codex     2026-05-01T12:00:00     2.2s failed
"""


def test_history_and_replay_are_pinned_on_a_recorded_journal(ws):
    job = recorded_journal(ws.home)
    replay = CliRunner().invoke(cli, ["job", "replay", job])
    assert replay.exit_code == 0 and replay.output == REPLAY
    history = CliRunner().invoke(cli, ["job", "history"])
    assert history.exit_code == 0 and history.output == HISTORY
    rows = json.loads(CliRunner().invoke(cli, ["job", "history", "--json"]).output)
    assert rows[0]["manifestDigest"] == "sha256:00" and rows[0]["workspace"] == "/srv/cq"
    exported = CliRunner().invoke(cli, ["job", "export", job]).output
    assert exported == (ws.home / "jobs" / f"{job}.jsonl").read_text()
