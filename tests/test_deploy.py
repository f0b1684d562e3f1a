"""End to end on the embedded sandbox D601: real git, rsync, bash, SQLite, HTTP and processes."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

from conftest import cqdeploy, start, wait_done, wait_until

from cqdeploy.sandbox import SECRET_PROXY
from cqdeploy.sandbox.cluster import pid_alive
from journal import verify


def live_commit(sandbox) -> str:
    done = cqdeploy("microservice", "health", "code-queue")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["deploy"]["commit"]


def test_a_deploy_succeeds_and_status_replays_it(ws, sandbox):
    head = sandbox.head()
    job = start("codex", "deploy", head[:10])
    assert set(job) >= {"jobId", "service", "providerId", "requestedCommit", "statusCommand", "tailCommand"}
    assert (job["service"], job["providerId"], job["requestedCommit"]) == ("code-queue", "D601", head[:10])
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "succeeded", view.data["error"]

    status = cqdeploy("job", "status", job["jobId"], "--json")
    assert status.returncode == 0
    out = json.loads(status.stdout)
    assert out["state"] == "succeeded" and out["resolvedCommit"] == head
    assert [s["name"] for s in out["steps"]] == [
        "fetch",
        "rsync",
        "build",
        "import",
        "apply",
        "pin",
        "restart",
        "verify",
    ]
    assert all(s["state"] == "succeeded" and s["startedAt"] <= s["endedAt"] for s in out["steps"])
    assert all(s["remoteLog"].endswith(".log") for s in out["steps"][:7])
    assert out["error"] is None and out["logTail"] is None
    assert live_commit(sandbox) == head

    text = cqdeploy("job", "status", job["jobId"]).stdout
    assert "succeeded" in text and head in text and "unidesk-deploy-" in text

    with ws.journal() as j:
        assert verify(j) == []
        types = [e.type for e in j.read(job["jobId"])]
    assert types[0] == "job.created" and types[-1] == "job.succeeded"
    assert "step.sentinel_seen" in types and "commit.resolved" in types

    deployment = sandbox.cluster.read()["deployments"]["unidesk/code-queue"]
    assert deployment["env"]["CODE_QUEUE_DEPLOY_COMMIT"] == head
    assert deployment["env"]["CODE_QUEUE_DEPLOY_REQUESTED_COMMIT"] == head[:10]
    assert deployment["annotations"]["cqdeploy.unidesk.io/commit"] == head
    assert sandbox.cluster.read()["images"]["unidesk-code-queue:d601"]["proxy_seen"] is True


def test_secrets_never_reach_journal_logs_or_output_and_state_is_private(ws, sandbox):
    job = start("codex", "deploy", sandbox.head())
    wait_done(ws, job["jobId"])
    secret = SECRET_PROXY.split(":")[2].split("@")[0]
    assert secret == "sandbox-proxy-secret"
    status = cqdeploy("job", "status", job["jobId"], "--json", "--tail-bytes", "100000").stdout
    assert secret not in status
    for root, dirs, files in os.walk(ws.home):
        if "sandbox" in root.split(os.sep):
            continue
        for d in dirs:
            if d != "sandbox":
                assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700, d
        for f in files:
            path = os.path.join(root, f)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
            if f != "config.toml":  # the one place the operator put it, private to them
                with open(path, "rb") as fh:
                    assert secret.encode() not in fh.read(), path
    for log in (sandbox.target / "tmp").glob("*.log"):
        assert secret not in log.read_text()
    assert not list((sandbox.target / "tmp").glob("*.d/env")), "secret env files are removed"


def test_runner_progress_is_jsonl_in_a_per_job_log(ws, sandbox):
    job = start("codex", "deploy", sandbox.head())
    wait_done(ws, job["jobId"])
    lines = [json.loads(x) for x in ws.runner_log(job["jobId"]).read_text().splitlines()]
    assert lines[0]["type"] == "runner.started" and lines[-1]["type"] == "job.succeeded"
    assert [x["seq"] for x in lines] == list(range(2, len(lines) + 2))


def test_a_newer_commit_changes_the_live_commit(ws, sandbox):
    first = start("codex", "deploy", sandbox.head())
    assert wait_done(ws, first["jobId"]).state.value == "succeeded"
    before = live_commit(sandbox)
    newer = sandbox.commit("bump", {"VERSION": "2\n"})
    second = start("codex", "deploy", newer)
    assert wait_done(ws, second["jobId"]).state.value == "succeeded"
    assert before != newer and live_commit(sandbox) == newer
    health = json.loads(cqdeploy("microservice", "proxy", "code-queue", "/health").stdout)
    assert health["version"] == "2"


def test_an_old_pod_still_answering_fails_the_job_with_the_mismatch(ws, sandbox):
    old = sandbox.head()
    assert wait_done(ws, start("codex", "deploy", old)["jobId"]).state.value == "succeeded"
    sandbox.set_fault("old_pod_answers", True)
    newer = sandbox.commit("bump", {"VERSION": "3\n"})
    job = start("codex", "deploy", newer)
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "failed"
    out = json.loads(cqdeploy("job", "status", job["jobId"], "--json").stdout)
    assert out["mismatch"] == {"expected": newer, "actual": old}
    assert out["steps"][7]["state"] == "failed" and out["steps"][6]["state"] == "succeeded"
    text = cqdeploy("job", "status", job["jobId"]).stdout
    assert f"expected {newer}, /health answered {old}" in text
    with ws.journal() as j:
        assert "health.commit_mismatch" in [e.type for e in j.read(job["jobId"])]


def test_a_failing_build_fails_at_step_3_with_its_log_tail(ws, sandbox):
    sandbox.set_fault("build_fail", True)
    job = start("codex", "deploy", sandbox.head())
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "failed" and view.data["failedStep"] == "build"
    assert [s["state"] for s in view.data["steps"][:4]] == ["succeeded", "succeeded", "failed", "pending"]
    done = cqdeploy("job", "status", job["jobId"], "--json", "--tail-bytes", "120")
    out = json.loads(done.stdout)
    assert "exited 1" in out["error"]
    assert 0 < len(out["logTail"].encode()) <= 120
    assert "failed to solve" in out["logTail"]
    text = cqdeploy("job", "status", job["jobId"], "--tail-bytes", "30000").stdout
    assert "--- last" in text and "sandbox fault build_fail is on" in text
    assert sandbox.counters().get("ctr import", 0) == 0


def test_a_commit_that_was_never_pushed_fails_at_fetch(ws, sandbox):
    local_only = sandbox.commit("not pushed", {"VERSION": "9\n"}, push=False)
    job = start("codex", "deploy", local_only)
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "failed" and view.data["failedStep"] == "fetch"
    assert view.data["error"] == f"commit {local_only} is not pushed to the remote"
    assert "not pushed to the remote" in view.data["logTail"]


def test_deploy_apply_resolves_the_manifest_branch(ws, sandbox):
    job = start("deploy", "apply", "--service", "code-queue")
    assert job["requestedCommit"] == "branch:main"
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "succeeded" and view.data["resolvedCommit"] == sandbox.head()
    assert view.data["entry"] == "apply"


def test_follow_exits_0_on_success_and_1_on_failure(ws, sandbox):
    job = start("codex", "deploy", sandbox.head())
    ok = cqdeploy("job", "status", job["jobId"], "--follow")
    assert ok.returncode == 0, ok.stderr
    assert "verify   succeeded" in ok.stdout
    sandbox.set_fault("build_fail", True)
    job = start("codex", "deploy", sandbox.head())
    bad = cqdeploy("job", "status", job["jobId"], "--follow", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout.splitlines()[-1])["state"] == "failed"


def test_runner_killed_between_steps_resumes_without_rerunning_completed_ones(ws, sandbox):
    job = start("codex", "deploy", sandbox.head(), env={"CQDEPLOY_FAULT_HOLD_AFTER": "build"})
    view = wait_until(ws, job["jobId"], lambda v: "build" in v.machine.completed)
    os.kill(view.data["runner"]["pid"], signal.SIGKILL)
    lost = json.loads(cqdeploy("job", "status", job["jobId"], "--json").stdout)
    assert "runner lost: pid" in lost["runnerLost"] and lost["state"] == "build"
    resumed = cqdeploy("job", "resume", job["jobId"])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumeFrom"] == "import"
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "succeeded", view.data["error"]
    assert [s["attempt"] for s in view.data["steps"]] == [1] * 8
    counters = sandbox.counters()
    assert counters["docker build"] == 1 and counters["ctr import"] == 1
    assert counters["kubectl apply"] == 1 and counters["kubectl rollout restart"] == 1
    with ws.journal() as j:
        types = [e.type for e in j.read(job["jobId"])]
    assert types.count("job.resumed") == 1 and types.count("step.started") == 8


def test_runner_killed_inside_a_step_reattaches_and_the_step_runs_once(ws, sandbox):
    sandbox.set_fault("sleep.build", 1.5)
    job = start("codex", "deploy", sandbox.head())
    view = wait_until(ws, job["jobId"], lambda v: v.step("build")["remoteLog"] is not None)
    os.kill(view.data["runner"]["pid"], signal.SIGKILL)
    assert cqdeploy("job", "resume", job["jobId"]).returncode == 0
    view = wait_done(ws, job["jobId"])
    assert view.state.value == "succeeded", view.data["error"]
    assert view.step("build")["attempt"] == 1
    assert sandbox.counters()["docker build"] == 1


def test_the_job_deadline_kills_the_running_step(ws, sandbox):
    sandbox.set_fault("sleep.build", 30)
    job = start("codex", "deploy", sandbox.head(), "--timeout-ms", "2500")
    view = wait_done(ws, job["jobId"], timeout=30)
    assert view.state.value == "timed_out" and view.data["failedStep"] == "build"
    run_dir = view.step("build")["remoteDir"]
    pid = int((Path(run_dir) / "pid").read_text())
    assert not pid_alive(pid)
    assert sandbox.counters().get("docker build", 0) == 0  # killed in its sleep, before it built
    resumed = cqdeploy("job", "resume", job["jobId"])
    assert resumed.returncode == 5 and "already ended timed_out" in resumed.stderr


def test_sandbox_down_stops_every_process(ws, sandbox):
    assert wait_done(ws, start("codex", "deploy", sandbox.head())["jobId"]).state.value == "succeeded"
    pods = [p["pid"] for d in sandbox.cluster.read()["deployments"].values() for p in d["pods"]]
    backend_pid = sandbox.backend()[1]
    assert len(pods) == 2 and all(pid_alive(p) for p in pods) and pid_alive(backend_pid)
    done = cqdeploy("sandbox", "down")
    assert done.returncode == 0 and "stopped pod code-queue-" in done.stdout
    assert "backend-core simulator" in done.stdout
    assert not any(pid_alive(p) for p in [*pods, backend_pid])


def test_job_list_is_newest_first(ws, sandbox):
    a = start("codex", "deploy", sandbox.head())
    wait_done(ws, a["jobId"])
    b = start("codex", "deploy", sandbox.head())
    wait_done(ws, b["jobId"])
    rows = json.loads(cqdeploy("job", "list", "--json").stdout)
    assert [r["jobId"] for r in rows] == [b["jobId"], a["jobId"]]
    assert rows[0]["state"] == "succeeded"
    assert b["jobId"] in cqdeploy("job", "list").stdout
