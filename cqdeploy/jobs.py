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
from .projection import JobView
from .render import age

if TYPE_CHECKING:
    from journal import Journal

    from .manifest import Desired, Manifest
    from .workspace import Workspace

SNAPSHOT = "job-view-v1"
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


def create_job(
    journal: Journal,
    ws: Workspace,
    manifest: Manifest,
    desired: Desired,
    *,
    entry: str,
    timeout_ms: int,
    rollback_of: str | None = None,
) -> str:
    job_id = new_job_id()
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
    journal.append(job_id, 0, "job.created", data)
    return job_id


def load_view(journal: Journal, job_id: str, *, save_snapshot: bool = True) -> JobView:
    """Replay a job, starting from its cached projection when one is valid."""
    from journal import JournalError

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
        "age": age(d["createdAt"]),
    }


def spawn_runner(ws: Workspace, job_id: str, *, resume: bool = False) -> None:
    """Start the job's runner detached from this terminal; returns at once."""
    from .process import spawn_detached

    ws.ensure()
    argv = [sys.executable, "-m", "cqdeploy.runner", job_id] + (["--resume"] if resume else [])
    env = {**os.environ, "CQDEPLOY_HOME": str(ws.home)}
    spawn_detached(argv, log_path=str(ws.runner_log(job_id)), env=env)


def runner_alive(view: JobView) -> bool:
    """True when the job's last runner is a live process on this host."""
    runner = view.data.get("runner")
    if not runner or runner.get("host") != socket.gethostname():
        return False
    try:
        with open(f"/proc/{int(runner['pid'])}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError, TypeError):
        return False
    return b"cqdeploy.runner" in cmdline and view.job_id.encode() in cmdline
