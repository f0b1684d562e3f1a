"""Jobs over the journal: create, look up, list, and hand to a detached runner."""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import JournalProblem, UnknownJob

if TYPE_CHECKING:
    from journal import Journal

    from .manifest import Desired, Manifest
    from .projection import JobView
    from .workspace import Workspace

SNAPSHOT = "job-view-v2"
HEARTBEAT_S = 5.0
LEASE_S = 20.0
RUNNER_START_S = 10.0
SNAPSHOT_EVERY = 256


def new_job_id(now: datetime | None = None) -> str:
    """Sortable and unguessable: `cq-20261203T132239-1f3a9c`."""
    now = now or datetime.now(UTC)
    return f"cq-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname()}


def job_created(
    ws: Workspace,
    manifest: Manifest,
    desired: Desired,
    *,
    entry: str,
    timeout_ms: int,
    rollback_of: str | None = None,
) -> dict[str, Any]:
    """The data of a job's first event: the request, the desired manifest, who and where."""
    data: dict[str, Any] = {
        "service": desired.service,
        "provider": desired.provider,
        "requested": desired.requested,
        "repo": desired.repo,
        "commit": desired.commit,
        "branch": desired.branch,
        "timeout_ms": timeout_ms,
        "entry": entry,
        "who": {**who(), "workspace": str(ws.home)},
        "manifest": manifest.as_data(),
    }
    if rollback_of:
        data["rollback_of"] = rollback_of
    return data


def holder_state(journal: Journal) -> Any:
    """For the lock: is the job holding it still live, and what to say about its runner."""

    def state(job_id: str, since: str | None) -> tuple[bool, str]:
        from .render import parse_ts

        try:
            view = load_view(journal, job_id, save_snapshot=False)
        except UnknownJob:  # taken a moment ago by a deploy that is still writing its job
            taken = parse_ts(since)
            return bool(taken and (datetime.now(UTC) - taken).total_seconds() < RUNNER_START_S), ""
        if view.state.terminal:
            return False, ""
        alive, why = runner_state(view)
        if alive:
            return True, ""
        return True, f"; the lock is stale ({why}): `cqdeploy job resume {job_id}` or `cqdeploy lock release --force`"

    return state


def load_view(journal: Journal, job_id: str, *, save_snapshot: bool = True) -> JobView:
    """Replay a job, starting from its cached projection when one is valid."""
    from journal import JournalError

    from .projection import JobView

    try:
        cached = journal.load_snapshot(job_id, SNAPSHOT)
        view = JobView.restore(job_id, cached[1]) if cached is not None else JobView(job_id)
        folded = 0
        for e in journal.iter(job_id, view.seq + 1):
            view.apply(e.seq, e.ts, e.type, e.data)
            folded += 1
    except JournalError as e:
        raise JournalProblem(str(e)) from e
    if view.seq == 0:
        raise UnknownJob(f"no job {job_id!r} in {journal.directory} (see `cqdeploy job list`)")
    if save_snapshot and folded >= SNAPSHOT_EVERY:
        journal.save_snapshot(job_id, SNAPSHOT, view.seq, view.snapshot())
    return view


JOB_PREFIX = "cq-"


def job_ids(journal: Journal) -> list[str]:
    """Every job, newest first (other streams, such as the journal's own audit, are skipped)."""
    return [s.stream for s in reversed(journal.streams()) if s.stream.startswith(JOB_PREFIX)]


def all_views(journal: Journal, limit: int | None = None) -> list[JobView]:
    return [load_view(journal, job_id) for job_id in job_ids(journal)[:limit]]


def list_jobs(journal: Journal, limit: int = 20) -> list[dict[str, Any]]:
    """Newest first: jobId, service, commit, state, createdAt."""
    return [_summary(view) for view in all_views(journal, limit)]


def _age(ts: str | None) -> str:
    from .render import age

    return age(ts)


def _summary(view: JobView) -> dict[str, Any]:
    d = view.data
    return {
        "jobId": view.job_id,
        "service": d["service"],
        "providerId": d["providerId"],
        "requestedCommit": d["requestedCommit"],
        "resolvedCommit": d["resolvedCommit"],
        "state": view.state.value,
        "currentStep": view.machine.current_step,
        "createdAt": d["createdAt"],
        "endedAt": d["endedAt"],
        "age": _age(d["createdAt"]),
    }


def spawn_runner(ws: Workspace, job_id: str, *, resume: bool = False) -> None:
    """Start the job's runner detached from this terminal; returns at once."""
    from .process import spawn_detached

    ws.ensure()
    argv = [sys.executable, "-m", "cqdeploy.runner", job_id] + (["--resume"] if resume else [])
    env = {**os.environ, "CQDEPLOY_HOME": str(ws.home)}
    spawn_detached(argv, log_path=str(ws.runner_log(job_id)), env=env)


def runner_state(view: JobView, now: datetime | None = None) -> tuple[bool, str]:
    """(alive, why) for the job's last runner.

    On this host the process table is asked; elsewhere the lease decides: a runner is lost
    once LEASE_S has passed since its last heartbeat.
    """
    from .render import parse_ts

    runner = view.data.get("runner")
    now = now or datetime.now(UTC)
    if not runner:
        created = parse_ts(view.data["createdAt"])
        young = created is not None and (now - created).total_seconds() < RUNNER_START_S
        return young, "runner never started"
    beat = parse_ts(view.data.get("lastHeartbeat")) or parse_ts(runner.get("since"))
    ago = int((now - beat).total_seconds()) if beat else -1
    if runner.get("host") == socket.gethostname():
        if _is_runner(int(runner.get("pid") or 0), view.job_id):
            return True, f"runner pid {runner['pid']} alive (last heartbeat {ago} s ago)"
        return False, f"runner lost: pid {runner['pid']} on {runner['host']} is gone (last heartbeat {ago} s ago)"
    lease = view.data.get("leaseS") or LEASE_S
    if ago > lease:
        return False, f"runner lost (last heartbeat {ago} s ago)"
    return True, f"runner on {runner['host']} (last heartbeat {ago} s ago)"


def runner_alive(view: JobView) -> bool:
    return runner_state(view)[0]


def _is_runner(pid: int, job_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"cqdeploy.runner" in cmdline and job_id.encode() in cmdline
