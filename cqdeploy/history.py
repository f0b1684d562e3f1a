"""Past deploys as data: history rows, the rollback target, what pruning may remove.

Pure functions over job views; the CLI feeds them from the journal.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidInput
from .projection import JobView
from .render import seconds


def history_row(view: JobView) -> dict[str, Any]:
    d = view.data
    who = d.get("who") or {}
    return {
        "jobId": view.job_id,
        "service": d["service"],
        "providerId": d["providerId"],
        "commit": d["resolvedCommit"] or d["requestedCommit"],
        "requestedCommit": d["requestedCommit"],
        "who": f"{who.get('user', '?')}@{who.get('host', '?')}",
        "workspace": who.get("workspace"),
        "entry": d["entry"],
        "rollbackOf": d.get("rollbackOf"),
        "manifestDigest": d["manifestDigest"],
        "startedAt": d["createdAt"],
        "durationS": seconds(d["createdAt"], d["endedAt"]),
        "result": view.state.value,
    }


def rollback_target(views: list[JobView], service: str, to: str | None = None) -> tuple[JobView, JobView | None]:
    """(the succeeded job whose commit to redeploy, the job being undone).

    `views` is newest first. Without `to`, the job undone is the service's newest finished job
    and the target the newest succeeded job before it with another commit (or, when the undone
    job failed, the newest succeeded one). Never a failed job, never another service's.
    """
    mine = [v for v in views if v.data["service"] == service and v.state.terminal]
    if not mine:
        raise InvalidInput(f"no finished deploy of {service} to roll back")
    undone = mine[0]
    succeeded = [v for v in mine if v.state.value == "succeeded"]
    if to is not None:
        for v in succeeded:
            if v.job_id == to or (len(to) >= 7 and (v.data["resolvedCommit"] or "").startswith(to.lower())):
                return v, undone
        raise InvalidInput(f"--to {to}: not a succeeded job or commit of {service}")
    if undone.state.value == "succeeded":
        current = undone.data["resolvedCommit"]
        candidates = [v for v in succeeded[1:] if v.data["resolvedCommit"] != current]
    else:
        candidates = succeeded
    if not candidates:
        raise InvalidInput(f"no earlier succeeded deploy of {service} to roll back to")
    return candidates[0], undone


def prunable(views: list[JobView], keep: int) -> list[str]:
    """Jobs `journal prune --keep N` removes: beyond the newest N, never a live job and never a
    service's last succeeded job. `views` is newest first."""
    if keep < 0:
        raise InvalidInput("--keep must be 0 or more")
    protected = {v.job_id for v in views[:keep]}
    last_success: dict[str, str] = {}
    for v in views:
        if v.state.value == "succeeded":
            last_success.setdefault(v.data["service"], v.job_id)
        if not v.state.terminal:
            protected.add(v.job_id)
    protected |= set(last_success.values())
    return [v.job_id for v in views if v.job_id not in protected]
